"""Safe actions on duplicate groups: move, symlink or delete the non-keepers.

Everything is a dry run unless ``apply=True``: the plan is returned (and printed by the
CLI) and nothing on disk changes. Applied actions are written to a JSON journal *before*
each step and marked done after it, so :func:`undo` can restore what was moved or
linked even after a crash mid-way. A file outside ``root`` (the folder given by the
user) is never touched, and neither is a symlink that resolves outside it.

* ``move``: each duplicate goes to ``DEST/<its path relative to root>`` (the folder
  structure is kept, so equal names never collide); undo moves it back.
* ``symlink``: a link to each duplicate is created in ``DEST`` (non-destructive review
  folder, same relative layout); undo removes the links.
* ``delete``: each duplicate is unlinked; the journal keeps its size and content hash,
  but deleted bytes cannot be restored (undo reports them).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from ..atomic import atomic_write_bytes
from .groups import Group

ACTIONS = ("move", "symlink", "delete")
JOURNAL_VERSION = 1


@dataclass
class Step:
    """One planned file operation."""

    action: str
    source: str
    target: str | None
    keeper: str
    size: int = 0
    blake2b: str = ""
    done: bool = False

    def describe(self) -> str:
        if self.action == "delete":
            return f"delete {self.source}"
        verb = "move" if self.action == "move" else "symlink"
        return f"{verb} {self.source} -> {self.target}"


@dataclass
class Plan:
    """The steps of an action, plus what was refused and why."""

    action: str
    root: str
    destination: str | None
    steps: list[Step] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    journal: str | None = None
    applied: bool = False
    destination_created: bool = False


def _file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def plan_actions(groups: Sequence[Group], action: str, root: str | os.PathLike,
                 destination: str | os.PathLike | None = None) -> Plan:
    """Plan moving/linking/deleting every non-keeper member of ``groups``.

    Args:
        action: ``move``, ``symlink`` or ``delete``.
        root: the folder the user gave; only files inside it may be touched.
        destination: target folder for ``move`` and ``symlink``.

    Raises:
        InputError: unknown action, missing destination, or a destination inside the
            files being moved.
    """
    if action not in ACTIONS:
        raise InputError(f"unknown action {action!r}; valid: {', '.join(ACTIONS)}")
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise InputError(f"{root}: the folder to act in does not exist")
    dest = None
    if action in ("move", "symlink"):
        if destination is None:
            raise InputError(f"{action} needs a destination folder")
        dest = Path(destination).resolve()
        if dest == root_path:
            raise InputError("the destination must not be the scanned folder itself")
    plan = Plan(action, str(root_path), str(dest) if dest else None)
    seen: set[str] = set()
    for group in groups:
        for member in group.members:
            src = Path(os.path.abspath(member.path))
            if str(src) in seen:
                continue
            seen.add(str(src))
            # The path itself (not following a final symlink) and its real location must
            # both lie in root: never act on what a link points to outside it.
            if not _inside(src, root_path) or not _inside(src.resolve(), root_path):
                plan.refused.append((str(src), f"outside {root_path}"))
                continue
            if dest is not None and _inside(src, dest):
                plan.refused.append((str(src), f"already inside the destination {dest}"))
                continue
            if not src.is_file():
                plan.refused.append((str(src), "no longer exists"))
                continue
            target = str(dest / src.relative_to(root_path)) if dest is not None else None
            if target is not None and os.path.lexists(target):
                plan.refused.append((str(src), f"{target} already exists"))
                continue
            plan.steps.append(Step(action, str(src), target, group.keeper, src.stat().st_size))
    return plan


def _write_journal(path: Path, plan: Plan) -> None:
    payload = {"format_version": JOURNAL_VERSION, "action": plan.action, "root": plan.root,
               "destination": plan.destination, "destination_created": plan.destination_created,
               "created": time.time(),
               "steps": [vars(s) for s in plan.steps]}
    atomic_write_bytes(path, json.dumps(payload, indent=2).encode())


def apply_plan(plan: Plan, journal: str | os.PathLike) -> Plan:
    """Carry out a plan, journaling each step (written before, marked done after)."""
    journal = Path(journal).resolve()
    journal.parent.mkdir(parents=True, exist_ok=True)
    for step in plan.steps:
        step.blake2b = _file_hash(Path(step.source))
    plan.journal = str(journal)
    plan.destination_created = plan.destination is not None and not Path(plan.destination).exists()
    _write_journal(journal, plan)
    for step in plan.steps:
        src = Path(step.source)
        if step.action == "move":
            Path(step.target).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), step.target)
        elif step.action == "symlink":
            Path(step.target).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(str(src), step.target)
        else:
            src.unlink()
        step.done = True
        _write_journal(journal, plan)
    plan.applied = True
    return plan


@dataclass
class UndoReport:
    restored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def undo(journal: str | os.PathLike) -> UndoReport:
    """Reverse the done steps of a journal, last first; returns what was restored.

    Moves are moved back (the bytes are checked against the journal's hash first),
    links are removed, deletions are reported as not restorable. Folders the moves
    created under the destination are removed again when they end up empty.
    """
    path = Path(journal)
    try:
        payload = json.loads(path.read_text())
        steps = payload["steps"]
        root = Path(payload["root"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{journal}: not a readable dedup journal ({exc})") from None
    report = UndoReport()
    dest = Path(payload["destination"]) if payload.get("destination") else None
    for step in reversed(steps):
        if not step.get("done"):
            continue
        src, target = Path(step["source"]), Path(step["target"]) if step.get("target") else None
        if not _inside(src, root):
            report.failed.append((str(src), f"outside {root}; refusing"))
            continue
        if step["action"] == "delete":
            report.failed.append((str(src), "deleted; bytes cannot be restored"))
            continue
        if step["action"] == "symlink":
            if target is not None and target.is_symlink() and os.readlink(target) == str(src):
                target.unlink()
                report.restored.append(str(target))
            else:
                report.failed.append((str(target), "not the link this journal created"))
            continue
        if os.path.lexists(src):
            report.failed.append((str(src), "a file is back at the original path; left alone"))
            continue
        if target is None or not target.is_file():
            report.failed.append((str(src), f"moved copy {target} is missing"))
            continue
        if step.get("blake2b") and _file_hash(target) != step["blake2b"]:
            report.failed.append((str(src), f"{target} changed since it was moved; left alone"))
            continue
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(target), str(src))
        report.restored.append(str(src))
    if dest is not None and dest.is_dir():
        # Remove now-empty folders the moves or links created (deepest first).
        for folder in sorted((p for p in dest.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                folder.rmdir()
            except OSError:
                pass
        if payload.get("destination_created"):
            try:
                dest.rmdir()
            except OSError:
                pass
    if not report.failed:
        payload["undone"] = time.time()
        atomic_write_bytes(path, json.dumps(payload, indent=2).encode())
    return report
