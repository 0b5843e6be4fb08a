"""Append-only JSONL after a crash: a cut last line (mid-row, mid-character, or the only line) is skipped by
readers and truncated away in place by the writer, every complete row kept byte for byte."""

from __future__ import annotations

import json

import pytest

from sapo.files import append_rows, drop_partial_last_line, read_complete_rows, read_jsonl

ROWS = [{"key": "a", "text": "café"}, {"key": "b", "text": "日本語の答え"}, {"key": "c", "text": "naïve ✓"}]


def jsonl_bytes(rows: list[dict]) -> bytes:
    """What the writers produce: ensure_ascii=False, one row per line."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def mid_character_cut(data: bytes) -> int:
    """A byte offset inside the last multi-byte character of ``data``."""
    last = max(i for i, byte in enumerate(data) if byte >= 0xC0)  # the lead byte of a multi-byte character
    return last + 1


@pytest.mark.parametrize("cut", ["mid_character", "mid_json"])
def test_a_cut_last_line_is_skipped_then_truncated_in_place(tmp_path, cut):
    whole = jsonl_bytes(ROWS[:2])
    last = jsonl_bytes(ROWS[2:])
    at = mid_character_cut(last) if cut == "mid_character" else len(last) // 2
    if cut == "mid_character":
        with pytest.raises(UnicodeDecodeError):
            last[:at].decode("utf-8")  # the cut really falls inside a character
    path = tmp_path / "cache.jsonl"
    path.write_bytes(whole + last[:at])

    assert read_complete_rows(path) == ROWS[:2]
    drop_partial_last_line(path)
    assert path.read_bytes() == whole  # every complete row, byte for byte
    with path.open("a", encoding="utf-8") as handle:
        append_rows(handle, ROWS[2:])
    assert read_complete_rows(path) == ROWS
    assert read_jsonl(path) == ROWS


def test_a_file_with_no_newline_is_emptied(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(jsonl_bytes(ROWS[:1])[:-5])
    assert read_complete_rows(path) == []
    drop_partial_last_line(path)
    assert path.read_bytes() == b""


def test_an_empty_or_missing_file(tmp_path):
    path = tmp_path / "cache.jsonl"
    assert read_complete_rows(path) == []
    drop_partial_last_line(path)  # no file: nothing to do, nothing created
    assert not path.exists()
    path.write_bytes(b"")
    assert read_complete_rows(path) == []
    drop_partial_last_line(path)
    assert path.read_bytes() == b""


def test_a_whole_file_is_left_alone(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(jsonl_bytes(ROWS))
    before = path.stat()
    drop_partial_last_line(path)
    assert path.read_bytes() == jsonl_bytes(ROWS)
    assert path.stat().st_mtime_ns == before.st_mtime_ns  # not even rewritten


def test_a_bad_line_inside_is_skipped_like_a_cut_one(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(jsonl_bytes(ROWS[:1]) + b"\xff\xfe not utf-8\n" + b'{"key": \n' + jsonl_bytes(ROWS[1:]))
    assert read_complete_rows(path) == ROWS


def test_a_long_cut_line_spanning_read_blocks(tmp_path):
    # The writer finds the last newline reading backwards in blocks; a cut line longer than one block.
    whole = jsonl_bytes(ROWS)
    cut = jsonl_bytes([{"key": "long", "text": "é" * 100_000}])[:-7]
    path = tmp_path / "cache.jsonl"
    path.write_bytes(whole + cut)
    drop_partial_last_line(path)
    assert path.read_bytes() == whole


def test_line_separators_inside_strings_stay_in_their_row(tmp_path):
    # ensure_ascii=False writes U+2028, U+2029 and U+0085 raw; they are not line ends in JSONL.
    rows = [{"key": "sep", "text": "one\u2028two\u2029three\x85four"}, ROWS[0]]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(jsonl_bytes(rows))
    assert read_complete_rows(path) == rows
    assert read_jsonl(path) == rows
