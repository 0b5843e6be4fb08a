"""The benchmarks ``sapo eval`` knows, and the flags that name them (``--suite``, ``--limit``)."""

from __future__ import annotations

import argparse

from sapo.argtypes import positive_int
from sapo.errors import RecipeError

SUITE = ("openllm", "ifeval", "mtbench", "alpacaeval", "verifiable")
PAPER_SUITE = SUITE[:4]  # the default; verifiable is the embedded families' held-out set (verifiable.py)
JUDGED = ("mtbench", "alpacaeval")
GENERATING = (*JUDGED, "verifiable")  # answered here with one loaded model (lm-eval loads its own)


def parse_suite(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITE]
    if unknown or not names:
        raise RecipeError(f"--suite: expected a comma list of {', '.join(SUITE)}; got {text!r}")
    return names


def parse_limit(text: str) -> dict[str, int]:
    """``--limit``: N (the first N items of every benchmark) or SUITE=N[,SUITE=N] (of those benchmarks only)."""
    try:
        if "=" not in text:
            return {"*": positive_int(text)}
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        limits = {name.strip(): positive_int(value) for name, value in pairs}
        if len(limits) != len(pairs):
            raise ValueError("a benchmark named twice")
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise argparse.ArgumentTypeError(f"expected N or SUITE=N[,SUITE=N] with N >= 1; got {text!r} ({e})") from e
    unknown = sorted(set(limits) - set(SUITE))
    if unknown or not limits:
        wanted = ", ".join(unknown) or repr(text)
        raise argparse.ArgumentTypeError(f"unknown benchmark {wanted} in {text!r}: one of {', '.join(SUITE)}")
    return limits


def limit_of(limits: dict[str, int] | None, suite: str) -> int | None:
    return (limits or {}).get(suite, (limits or {}).get("*"))
