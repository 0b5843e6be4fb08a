"""What every bench entry measures with: turns taken side by side, peak memory, and the machine.

Ratios, never bare times: both sides of an entry run in one process, taking turns (the order
alternates each round), and each side keeps its best turn. These machines are shared and noisy;
a turn disturbed by a neighbour is slower, never faster, so the best turn is the least disturbed.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable

import torch

from sapo.evaluate.results import package_versions
from sapo.procmem import memory_status

PACKAGES = ("torch", "transformers", "trl", "accelerate", "lm_eval")


def take_turns(sides: dict[str, Callable[[], object]], rounds: int, warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each call of each side, ``rounds`` times, the order reversed every other round. A warm-up
    call of each side first (first-call allocations, kernel choices, lazy imports) is not counted."""
    if warmup:
        for run in sides.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides.items())
    for turn in range(rounds):
        for name, run in order if turn % 2 == 0 else order[::-1]:
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    return times


def best(times: list[float]) -> float:
    return min(times)


def spread(times: list[float]) -> float:
    """Relative spread of a side's turns, (max - min) / min: how noisy the machine was while measuring."""
    return (max(times) - min(times)) / min(times) if times else 0.0


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (VmHWM; see ``sapo.procmem``)."""
    peak = memory_status().get("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: macOS reports bytes, others KiB
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The hardware and software a bench result was measured on."""
    info = {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}  # fmt: skip
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_count"] = torch.cuda.device_count()
    return {**info, "packages": package_versions(PACKAGES)}


def machine_slug(info: dict) -> str:
    """The results file's name for this machine class: ``cpu-2-cores`` or ``cuda-1x-nvidia-h100-80gb-hbm3``."""
    if "gpu" in info:
        name = "".join(c if c.isalnum() else "-" for c in info["gpu"].lower()).strip("-")
        return f"cuda-{info['gpu_count']}x-{'-'.join(filter(None, name.split('-')))}"
    return f"cpu-{info['cpu_cores']}-cores"


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize() -> None:
    """Wait for queued GPU work, so a timer reads the work and not its launch."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    """The machine's own matmul speed: best of ``repeats`` n x n float32 products (bf16 on a GPU), 2 n^3 each."""
    dtype = torch.bfloat16 if device() == "cuda" else torch.float32
    a = torch.randn(n, n, device=device(), dtype=dtype)
    b = torch.randn(n, n, device=device(), dtype=dtype)
    times = take_turns({"mm": lambda: (a @ b, synchronize())}, repeats)["mm"]
    return 2 * n**3 / best(times)


def memory_bytes_per_s(mib: int = 512, repeats: int = 5) -> tuple[float, str]:
    """The machine's memory bandwidth: the fastest of three STREAM-style kernels over ``mib`` MiB tensors, in bytes
    moved (read + written) per second, best of ``repeats`` each, and which kernel it was. One kernel alone is no
    limit: on this VM a plain copy moved 31-52 GB/s between runs while a two-input update moved more."""
    n = mib * 2**20 // 4
    a, b, c = (torch.ones(n, device=device()) for _ in range(3))
    element = a.element_size()
    kernels = {"copy": (lambda: c.copy_(a), 2), "add": (lambda: torch.add(a, b, out=c), 3), "read": (a.sum, 1)}
    times = take_turns({name: lambda f=f: (f(), synchronize()) for name, (f, _) in kernels.items()}, repeats)
    speeds = {name: moved * n * element / best(times[name]) for name, (_, moved) in kernels.items()}
    fastest = max(speeds, key=speeds.get)
    return speeds[fastest], fastest
