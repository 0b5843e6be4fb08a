"""Files that survive a crash: atomic writes, append-only JSONL, folders published whole.

Every stage writes results a later run reads back (checkpoints, judge caches, generated
answers, results.json). A kill must never leave a half-written file where a reader expects a
whole one: single files are written to a temporary name in the same folder and renamed into
place; folders are published with a completion stamp (and built once, under a lock, when several
processes may ask for the same one); append-only JSONL readers skip a last line cut short (even
mid-character), and its writer truncates it away in place before appending. Also here: the one
name-sanitising rule for file names, and the one offline switch (Hugging Face's own).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sapo.errors import OutputInUseError

COMPLETE_STAMP = ".sapo-complete"  # written last into a published folder: without it the write was interrupted


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; an ordinary file is what readers expect
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, body, *, indent: int | None = 1, **dump_kwargs) -> Path:
    """``atomic_write_text`` of ``json.dumps(body)`` (non-ASCII kept as is)."""
    return atomic_write_text(path, json.dumps(body, indent=indent, ensure_ascii=False, **dump_kwargs))


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """Write a whole JSONL file atomically, one row per line."""
    return atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """Every row of a JSONL file that must be whole (blank lines skipped); a bad line raises."""
    # Split on "\n" only: str.splitlines also breaks at U+2028, U+0085 ..., which rows written with
    # ensure_ascii=False may hold inside a string.
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]


def publish_folder(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_dir)`` and move the folder to ``target`` only when it is complete (stamped)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        (tmp / COMPLETE_STAMP).write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def reuse_if_made_with(path: Path, made_with: dict, read: Callable[[Path], object], warn: Callable[[str], None]):
    """``read(path)`` when ``path``'s ``.meta.json`` (the settings it was made with) equals ``made_with``, else
    None. Generated outputs (MT-Bench answers, AlpacaEval outputs) are written before their meta, so a meta that
    does not match is removed: a kill between the two must never pair new outputs with old settings. A file that
    does not read back (our writes are atomic, but a copy or a full disk can cut one) is made again, with a
    ``warn``ing."""
    meta = path.with_suffix(".meta.json")
    try:
        if json.loads(meta.read_text(encoding="utf-8")) == made_with:
            return read(path)
    except FileNotFoundError:
        pass
    except (ValueError, TypeError, KeyError) as err:  # ValueError: bad JSON or UTF-8; the others: a wrong shape
        warn(f"{path} or its .meta.json does not read back ({err}); making it again")
    meta.unlink(missing_ok=True)
    return None


def is_published(folder: str | Path) -> bool:
    """Whether ``publish_folder`` finished writing ``folder``."""
    return (Path(folder) / COMPLETE_STAMP).is_file()


@contextlib.contextmanager
def held_lock(target: str | Path, *, wait: bool = True, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``target`` across processes (``fcntl.flock`` on ``.<name>.lock`` beside it),
    waiting for a process that holds it, or with ``wait=False`` stopping with an ``OutputInUseError`` that
    names the holder (``what``: the command, for the message). The kernel drops the lock when its holder
    dies, so a kill never leaves it stuck; the lock file stays (removing it would let two processes lock two
    different files) and holds the holder's pid."""
    import fcntl

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputInUseError(
                f"{target}: in use by another sapo process ({holder}); two {what or 'runs'} writing one folder "
                "would interleave their files: wait for it to finish, or choose another output folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def publish_folder_once(target: str | Path, write: Callable[[Path], None], *, done: Callable[[Path], bool]) -> Path:
    """``publish_folder(target, write)`` unless ``done(target)``, by one process at a time: several processes
    asking at once (``accelerate launch`` on a fresh cache) wait for the first, then find its folder whole,
    instead of each replacing the folder under the others' readers."""
    target = Path(target)
    if done(target):
        return target
    with held_lock(target):
        if not done(target):  # else a process we waited for wrote it
            publish_folder(target, write)
    return target


# --------------------------------------------------------------------------- append-only JSONL


def read_complete_rows(path: str | Path) -> list[dict]:
    """The rows of an append-only JSONL that parse. A line that does not decode or parse (the last one, cut by a
    crash mid-row or mid-character) is skipped. [] if no file."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    # Bytes, split on b"\n" and decoded line by line: a cut multi-byte character spoils only its own line.
    for line in path.read_bytes().split(b"\n"):
        try:
            rows.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
    return rows


def drop_partial_last_line(path: str | Path) -> None:
    """Cut a last line without its newline (left by a crash), so appended rows start on a line of their own.
    Only the file's own writer may call this: another process may be appending to it."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        keep = _end_of_last_line(handle, size)
        if keep < size:
            # Truncated in place, never rewritten: a kill here leaves the whole rows as they were.
            os.truncate(handle.fileno(), keep)
            os.fsync(handle.fileno())


def _end_of_last_line(handle, size: int, block: int = 1 << 16) -> int:
    """The byte offset just after the file's last b"\n" (0 if none), read backwards from the end."""
    end = size
    while end > 0:
        start = max(0, end - block)
        handle.seek(start)
        newline = handle.read(end - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def append_shared_rows(path: str | Path, rows: list[dict]) -> None:
    """Append rows to a JSONL that several processes may append to (a shared judge cache). A last line cut by a
    killed writer is left in place (readers skip it; cutting it, as ``drop_partial_last_line`` does for a file's
    only writer, could lose rows another process is appending) and the new rows start on a line of their own."""
    path = Path(path)
    with path.open("a+b") as probe:  # "a+": creates the file, reads its last byte
        size = probe.seek(0, os.SEEK_END)
        cut = False
        if size:
            probe.seek(size - 1)
            cut = probe.read(1) != b"\n"
    with path.open("a", encoding="utf-8") as handle:
        if cut:
            handle.write("\n")
        append_rows(handle, rows)


def append_rows(handle, rows: list[dict]) -> None:
    """Append rows to an open JSONL handle and make them durable before returning."""
    handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    handle.flush()
    os.fsync(handle.fileno())


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (weights files run to gigabytes)."""
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- names and the network


def safe_name(name: str, fallback: str = "model") -> str:
    """A file-name-safe form of a model or judge name: ``org/Model v2`` -> ``org_Model_v2``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/")).strip("_") or fallback


def hub_offline() -> bool:
    """Hugging Face's own offline switch (``HF_HUB_OFFLINE``, or ``HF_DATASETS_OFFLINE`` for data),
    as ``huggingface_hub`` and ``datasets`` read it."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    return os.environ.get("HF_DATASETS_OFFLINE", "").strip().upper() in constants.ENV_VARS_TRUE_VALUES
