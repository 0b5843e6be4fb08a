"""One family of errors for problems a user can fix: bad input, a bad recipe, a missing model or file.

``sapo`` turns every ``SapoError`` into exit code 2 and one message that names the file, the
row or the field; anything else is a bug and keeps its traceback. Library code raises the
most specific subclass; nothing catches ``ValueError`` wholesale.
"""

from __future__ import annotations


class SapoError(Exception):
    """A problem the user can fix; the message says what and where."""


class DataError(SapoError):
    """A data file or row that cannot be used; the message names the file, the row and the field."""


class RecipeError(SapoError):
    """A recipe, an override or a flag that does not make a valid configuration."""


class ModelUnavailableError(SapoError):
    """A model could not be found locally and the hub is out of reach."""


class JudgeError(SapoError):
    """The judge cannot be reached or refused a request in a way retrying will not fix."""


class CheckpointError(SapoError):
    """A checkpoint that cannot be resumed from (incomplete, or written by another setup)."""


class OutputInUseError(SapoError):
    """Another sapo process is writing to the same output folder."""


def closest(word: str, known, cutoff: float = 0.7) -> str | None:
    """The entry of ``known`` that ``word`` most likely misspells (difflib's ratio >= ``cutoff``), or None: the
    "did you mean" of a misspelled field, key or flag."""
    import difflib

    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=cutoff)
    return close[0] if close else None
