"""The web page in a real browser: Debian's chromium + chromedriver driven by Selenium.

A uvicorn server runs the app in a background thread on a free local port; the browser
uploads a real photo through the page's file input, reads the result grid, clicks a
result, shows an error, browses by tag, and leaves a screenshot in docs/img/web_page.png.

Locally the test skips when chromium, chromedriver or selenium is missing; under CI
(env CI set) .ci/run installs them, so absence is a failure there.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The docs picture is refreshed only on request (LOOKALIKE_SCREENSHOT=1), so ordinary
# runs do not rewrite a tracked file.
DOCS_SCREENSHOT = ROOT / "docs" / "img" / "web_page.png"
QUERY = "mixed_images/ukbench00120_hflip.jpg"
CORRUPT = "mixed_images/ukbench09268_corrupt.jpg"


def _need(condition: bool, what: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing under CI (.ci/run must install it)")
    pytest.skip(f"{what} is not installed (apt-get install chromium chromium-driver; pip install selenium)")


def _browser_paths() -> tuple[str, str]:
    chromium = os.environ.get("LOOKALIKE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    driver = os.environ.get("LOOKALIKE_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    _need(Path(chromium).is_file(), f"chromium ({chromium})")
    _need(Path(driver).is_file(), f"chromedriver ({driver})")
    for module in ("selenium", "uvicorn", "fastapi", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            _need(False, f"the Python package {module!r}")
    return chromium, driver


@pytest.fixture(scope="module")
def server_url(ukbench_dir, tmp_path_factory):
    _browser_paths()
    import uvicorn

    from lookalike.collection import Collection
    from lookalike.server import create_app

    files = sorted((ukbench_dir / "base_images").glob("*.jpg")) + sorted(
        p for p in (ukbench_dir / "mixed_images").glob("*.jpg") if "hflip" not in p.name)
    directory = tmp_path_factory.mktemp("web") / "ukbench.lk"
    with Collection.create(directory, descriptors=["color"]) as coll:
        coll.add(files, workers=1, metadata={str(p): {"tags": [p.stem.split("_")[0]]} for p in files})
    # A socket bound here (port 0 = any free port) and handed to uvicorn: no port race.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(directory, workers=2, max_upload_bytes=200_000), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 20 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser(server_url, tmp_path_factory):
    chromium, driver_path = _browser_paths()
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # explicit paths: Selenium Manager never downloads anything
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1100", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


# Read the grid in one script call: the page replaces the cards on every search, so
# element handles taken one by one could go stale half-way through.
def _captions(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results figure.hit .name')].map(e => e.textContent)")


def _distances(driver) -> list[float]:
    return [float(t) for t in driver.execute_script(
        "return [...document.querySelectorAll('#results figure.hit .distance')].map(e => e.textContent)")]


def _ids(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#results figure.hit')].map(e => e.dataset.id)")


def test_upload_click_error_and_browse_in_a_real_browser(browser, server_url, ukbench_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(server_url + "/")
    wait.until(lambda d: "14 images" in d.find_element(By.ID, "collection-info").text)
    assert "1 unreadable" in browser.find_element(By.ID, "collection-info").text

    # 1. Upload the flipped photo through the file input: its other versions come first.
    browser.find_element(By.ID, "file-input").send_keys(str(ukbench_dir / QUERY))
    wait.until(lambda d: len(_captions(d)) == 10)
    names = _captions(browser)
    assert names[0] == "ukbench00120.jpg"
    assert sorted(names[:4]) == ["ukbench00120.jpg", "ukbench00120.jpg", "ukbench00120_resize.jpg",
                                 "ukbench00120_rotation.jpg"]
    assert not any(n.startswith("ukbench00120") for n in names[4:])
    distances = _distances(browser)
    assert distances == sorted(distances) and distances[0] > 0
    assert "ukbench00120_hflip.jpg" in browser.find_element(By.ID, "query-caption").text
    assert "10 results for ukbench00120_hflip.jpg" in browser.find_element(By.ID, "status").text
    # Every thumbnail (and the query preview) actually decoded in the browser.
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results img, #query-image')]"
        ".every(i => i.complete && i.naturalWidth > 0)"))
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shot = DOCS_SCREENSHOT if os.environ.get("LOOKALIKE_SCREENSHOT") else tmp_path / "web_page.png"
    assert browser.save_screenshot(str(shot))

    # 2. Click another photo's result: the grid becomes that item's neighbours, led by
    # its byte-identical copy at distance 0.
    target_id = _ids(browser)[_captions(browser).index("ukbench09268.jpg")]
    browser.find_element(By.CSS_SELECTOR, f'#results figure.hit[data-id="{target_id}"] button').click()
    wait.until(lambda d: f"item {target_id}" in d.find_element(By.ID, "query-caption").text
               and _captions(d) and _captions(d)[0] == "ukbench09268.jpg")
    assert _distances(browser)[0] == 0.0
    ids = _ids(browser)
    assert target_id not in ids and len(ids) == 10

    # 3. The k selector re-runs the same query with fewer results.
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "k")).select_by_visible_text("5")
    wait.until(lambda d: len(_captions(d)) == 5)
    assert _captions(browser)[0] == "ukbench09268.jpg"

    # 4. A corrupt upload shows the API's reason, naming the file.
    browser.find_element(By.ID, "file-input").send_keys(str(ukbench_dir / CORRUPT))
    error = browser.find_element(By.ID, "error")
    wait.until(lambda d: error.is_displayed())
    assert error.text == "Error: ukbench09268_corrupt.jpg: not a recognised image format"

    # The page refuses an upload over the server's limit (200,000 bytes here) itself.
    browser.find_element(By.ID, "file-input").send_keys(str(ukbench_dir / "base_images/ukbench00120.jpg"))
    wait.until(lambda d: "upload limit" in error.text)
    assert error.text == "Error: ukbench00120.jpg: 203.9 KiB is over the upload limit of 195.3 KiB"

    # 5. Browse by tag through the filter box: only that photo's four versions, no error.
    where = browser.find_element(By.ID, "where")
    where.clear()
    where.send_keys("tag=ukbench00120")
    browser.find_element(By.ID, "browse").click()
    wait.until(lambda d: not d.find_element(By.ID, "error").is_displayed() and len(_captions(d)) == 4)
    assert sorted(_captions(browser)) == ["ukbench00120.jpg", "ukbench00120.jpg", "ukbench00120_resize.jpg",
                                          "ukbench00120_rotation.jpg"]
    assert "of 4" in browser.find_element(By.ID, "status").text

    # 6. A bad filter is reported readably, then Enter with a good one searches again.
    where.clear()
    where.send_keys("width>>3", Keys.ENTER)
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "width>>3" in browser.find_element(By.ID, "error").text
    where.clear()
    where.send_keys("tag=ukbench09268", Keys.ENTER)
    wait.until(lambda d: not d.find_element(By.ID, "error").is_displayed() and len(_captions(d)) == 2)
    assert _captions(browser) == ["ukbench09268.jpg", "ukbench09268.jpg"]
