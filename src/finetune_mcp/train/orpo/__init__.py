"""Odds-Ratio Preference Optimisation (`method="orpo"`): `trl.experimental.orpo.ORPOTrainer` on
preference pairs; no reference model (SFT loss on chosen + λ·log-odds-ratio term)."""
