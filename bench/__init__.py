"""``sapo bench`` / ``nox -s bench``: what a step costs, how far from the machine's limits, how cost grows."""
