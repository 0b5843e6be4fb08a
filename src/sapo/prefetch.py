"""``sapo prefetch RECIPE|SUITE ...``: fill the caches on a machine that is online, so a run needs no network.

Each stage says what it needs (``sapo.train.prefetch`` for a recipe: its model and data set;
``sapo.evaluate.prefetch`` for a suite: the benchmark data sets, files and NLTK data); this module fetches
each need, through the same loaders a run uses (so what lands is what the run reads: the hub cache, the
``datasets`` cache), and lists them with their sizes. Offline (``HF_HUB_OFFLINE=1``) the same command checks
that a filled cache is enough: every need is found there, or the command fails naming the missing one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Need:
    """One thing a run needs: ``fetch`` downloads it (or finds it cached) and returns where it is."""

    kind: str  # model, dataset, file, nltk, packaged
    name: str
    fetch: Callable[[], list[Path]]
    why: str = ""


def size_of(paths: list[Path]) -> int:
    """Bytes under ``paths`` (files, or folders walked), links followed: the hub cache links into blobs/."""
    total = 0
    for path in paths:
        files = [path] if path.is_file() else [p for p in Path(path).rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return total


def human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def fetch_all(needs: list[Need], dry_run: bool = False) -> list[dict]:
    """Fetch every need once (by kind and name), printing one line each; returns what was found."""
    from sapo.errors import SapoError

    done, rows = set(), []
    for need in needs:
        if (need.kind, need.name) in done:
            continue
        done.add((need.kind, need.name))
        if dry_run:
            print(f"{need.kind:9} {need.name}  ({need.why})")
            continue
        try:
            paths = need.fetch()
        except SapoError as err:
            raise SapoError(f"prefetch: {need.kind} {need.name}: {err}") from err
        except Exception as err:  # hub and datasets errors are many types; each names what failed
            raise SapoError(f"prefetch: {need.kind} {need.name}: {type(err).__name__}: {str(err)[:300]}") from err
        rows.append({"kind": need.kind, "name": need.name, "bytes": size_of(paths), "where": [str(p) for p in paths]})
        print(f"{need.kind:9} {need.name}  {human(rows[-1]['bytes'])}  {paths[0] if paths else ''}")
    if rows:
        print(f"total: {human(sum(r['bytes'] for r in rows))} in {len(rows)} items")
    return rows
