"""Training: the SAPO trainer, its pure pieces (losses, EMA, replay buffer, segment splice),
the shared data pipeline and the baselines. Installed as ``sapo.train``."""
