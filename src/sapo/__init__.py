"""SAPO harness: Self-Augmented Preference Optimization (Yin et al., 2024, arXiv 2405.20830).

Not to be confused with Soft Adaptive Policy Optimization (Qwen, arXiv 2511.20347), an RL
policy-gradient loss that shares the acronym. This package trains the 2024 preference-
optimization method and its baselines (DPO, ORPO, SPIN), evaluates any Hugging Face
checkpoint on the paper's benchmarks, and regenerates the paper's tables and figure.

Subpackages follow the pipeline: ``sapo.train`` -> checkpoints -> ``sapo.evaluate`` ->
results -> ``sapo.reproduce``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sapo-harness")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
