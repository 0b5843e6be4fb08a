"""One logger for the harness, rank-aware, and one place that quiets upstream noise.

Library code logs through ``get_logger(__name__)`` and prints nothing itself; the ``sapo``
command configures the level once (``--log-level``) with ``setup_logging``. Under
``accelerate launch`` only the main process logs (accelerate's ``MultiProcessAdapter``; pass
``main_process_only=False`` for per-rank lines); outside it there is one process and every
record goes through. Progress bars follow the same rule (``progress_disabled``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from accelerate.logging import MultiProcessAdapter

LOGGER_ROOT = "sapo"
LEVELS = ("debug", "info", "warning", "error")

# Upstream warnings a newcomer's terminal does not need, by category and the module that issues them.
# Each names an API we do not call ourselves (or call with the new name); the rest still show.
_QUIET = (
    (FutureWarning, r"transformers(\..*)?"),
    (FutureWarning, r"trl(\..*)?"),
    (FutureWarning, r"sklearn(\..*)?"),  # alpaca_eval's LC fit passes penalty= (removed in scikit-learn 1.10)
    (UserWarning, r"pkg_resources(\..*)?|alpaca_eval(\..*)?"),  # alpaca_eval 0.6.6 imports pkg_resources
    (DeprecationWarning, r".*"),
)


def _is_main_process() -> bool:
    from accelerate.state import PartialState

    if PartialState._shared_state:  # inside an accelerate run: its view of the ranks
        return PartialState().is_main_process
    return os.environ.get("RANK", "0") == "0"


class _Adapter(MultiProcessAdapter):
    """accelerate's adapter, usable before (or without) an accelerate state: one process then. Records carry
    accelerate's ``[RANK n]`` prefix only when there are several processes to tell apart."""

    def process(self, msg, kwargs):
        from accelerate.state import PartialState

        if PartialState._shared_state and PartialState().num_processes > 1:
            return super().process(msg, kwargs)
        kwargs.setdefault("stacklevel", 2)
        return msg, kwargs

    def log(self, level, msg, *args, **kwargs):
        from accelerate.state import PartialState

        if PartialState._shared_state:
            return super().log(level, msg, *args, **kwargs)
        kwargs.pop("in_order", None)
        main_only = kwargs.pop("main_process_only", True)
        if self.isEnabledFor(level) and (not main_only or _is_main_process()):
            msg, kwargs = self.process(msg, kwargs)
            self.logger.log(level, msg, *args, **kwargs)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (tests and tools swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def get_logger(name: str) -> _Adapter:
    """The harness logger for module ``name`` (``sapo.*``)."""
    if not name.startswith(LOGGER_ROOT):
        name = f"{LOGGER_ROOT}.{name}"
    return _Adapter(logging.getLogger(name), {})


def progress_disabled() -> bool:
    """True on every process but the main one: progress bars are drawn once."""
    return not _is_main_process()


def quiet_upstream() -> None:
    """Filter the upstream deprecation noise listed in ``_QUIET``; and transformers' own advice lines."""
    for category, module in _QUIET:
        warnings.filterwarnings("ignore", category=category, module=module)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def setup_logging(level: str = "info") -> None:
    """Send ``sapo.*`` records at ``level`` to stderr, one plain line each; quiet upstream noise."""
    if level not in LEVELS:
        from sapo.errors import RecipeError

        raise RecipeError(f"--log-level: expected one of {', '.join(LEVELS)}, got {level!r}")
    root = logging.getLogger(LOGGER_ROOT)
    root.setLevel(level.upper())
    if not any(getattr(h, "_sapo", False) for h in root.handlers):
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._sapo = True
        root.addHandler(handler)
    quiet_upstream()


def engine_name(accelerator) -> str:
    """How the run is distributed, in words: what a user checks first when a launch config did not take."""
    from accelerate.utils import DistributedType

    state, kind = accelerator.state, accelerator.state.distributed_type
    if kind == DistributedType.DEEPSPEED:
        name = f"DeepSpeed ZeRO-{state.deepspeed_plugin.zero_stage}"
    elif kind == DistributedType.FSDP:
        name = f"FSDP{getattr(state.fsdp_plugin, 'fsdp_version', 1)}"
    elif state.num_processes > 1:
        name = f"DDP ({kind.value})"
    else:
        name = "single process"
    return f"{name} on {state.num_processes} process{'es' if state.num_processes > 1 else ''}, {accelerator.device}"
