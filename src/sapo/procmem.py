"""A process's memory as Linux reports it in ``/proc/<pid>/status``: what the bench and the rehearsal measure.

VmHWM is the high-water mark of the process's own address space. ``getrusage``'s ru_maxrss is not used on
Linux: it carries the parent's peak into an exec'ed child, so a child started by a large process reads its
parent's peak.
"""

from __future__ import annotations

from pathlib import Path

FIELDS = ("VmHWM", "VmRSS")  # peak and current resident memory


def memory_status(pid: int | str = "self") -> dict[str, int]:
    """``{"VmHWM": bytes, "VmRSS": bytes}`` of ``pid`` (default: this process); empty when the process has gone
    or there is no ``/proc`` (macOS)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    found = (line.split(":", 1) for line in lines if ":" in line)
    return {key: int(value.split()[0]) * 1024 for key, value in found if key in FIELDS}  # the file says kB
