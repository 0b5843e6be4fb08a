"""Append-only JSONL files that survive being killed mid-write (judge caches, SPIN generations).

A crash can leave the last line cut short. Readers skip it; before appending again, the
writer drops it so the next row starts on a line of its own.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_complete_rows(path: Path) -> list[dict]:
    """The rows of ``path`` that parse; a line cut short by a crash is skipped. [] if there is no file."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def drop_partial_last_line(path: Path) -> None:
    """Cut a last line without its newline (left by a crash), so appended rows start on a line of their own.
    Only the file's own writer may call this: another process may be appending to it."""
    path = Path(path)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
