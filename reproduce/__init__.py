"""Reproduction: the paper's tables and figure, with the published number beside ours.
Installed as ``sapo.reproduce``."""
