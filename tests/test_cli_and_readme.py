"""The CLI end to end on real images, and the README's Python example, executed."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "lookalike.cli", *map(str, args)],
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["report"].added >= 20


def test_index_search_info_remove_sync(ukbench_dir, tmp_path):
    db = tmp_path / "uk.lk"
    out = run_cli("index", ukbench_dir, "--db", db, "-d", "color", "--workers", "2", "--json")
    report = json.loads(out.stdout)
    assert report["added"] == 16 and report["failed"][0]["path"].endswith("ukbench09268_corrupt.jpg")

    query = ukbench_dir / "mixed_images" / "ukbench00120_resize.jpg"
    if not query.exists():
        query = sorted((ukbench_dir / "mixed_images").glob("ukbench00120*"))[0]
    html = tmp_path / "hits.html"
    out = run_cli("search", db, query, "-k", "3", "--json", "--html", html)
    results = json.loads(out.stdout)
    assert len(results) == 1 and len(results[0]["results"]) == 3
    top = results[0]["results"]
    assert all(set(hit) == {"id", "path", "distance", "metadata"} for hit in top)
    assert [h["distance"] for h in top] == sorted(h["distance"] for h in top)
    # The resized/flipped/gray variants of photo 00120 are its nearest neighbours.
    assert sum("ukbench00120" in h["path"] for h in top) >= 2
    assert html.read_text().count("<figure") == 4

    human = run_cli("search", db, query, "-k", "2")
    assert "distance" in human.stdout

    info = json.loads(run_cli("info", db, "--json", "--failures").stdout)
    assert info["items"] == 16 and info["errors"] == 1 and info["failures"][0]["reason"]
    assert info["descriptors"]["color"]["index_in_use"]["spec"] == "flat"

    victim = sorted((ukbench_dir / "base_images").glob("*.jpg"))[0]
    assert "removed 1" in run_cli("remove", db, victim).stdout
    assert "dropped 0" in run_cli("sync", db).stdout


def test_errors_are_one_line_with_exit_code_1(tmp_path):
    proc = run_cli("search", tmp_path / "nothing", tmp_path / "q.jpg", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and "not a lookalike collection" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("index", tmp_path, "--db", tmp_path / "c", "-d", "colour:bins=8", check=False)
    assert proc.returncode == 1 and "unknown descriptor 'colour'" in proc.stderr and "valid names" in proc.stderr


def test_descriptors_listing():
    rows = json.loads(run_cli("descriptors", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["color"]["dim"] == 512 and by_name["color"]["metric"] == "l2"


def test_demo_main_job(tmp_path):
    out = run_cli("demo", "--out", tmp_path / "demo", "--workers", "1")
    assert "chelsea_half.jpg ->" in out.stdout
    page = (tmp_path / "demo" / "results.html").read_text()
    assert page.count("<figure") >= 8


def test_dedup_cli_reports_a_cut_png_without_decoder_noise(shared_data, tmp_path):
    """A cut PNG is skipped with lookalike's reason, without OpenCV's own warning lines."""
    src = sorted((shared_data / "coil100" / "images").glob("*.png"))[:2]
    for p in src:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "cut.png").write_bytes(src[0].read_bytes()[:500])
    proc = run_cli("dedup", tmp_path, "--json", tmp_path / "out.json", "--workers", "1")
    assert "cut.png" in proc.stdout + proc.stderr
    assert "WARN" not in proc.stderr and "grfmt_png" not in proc.stderr
