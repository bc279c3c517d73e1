"""Direct Preference Optimisation (`method="dpo"`): TRL's DPOTrainer on preference pairs, the
reference being the base model with the LoRA adapter switched off (no second copy in memory)."""
