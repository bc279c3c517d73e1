"""Kahneman–Tversky Optimisation (`method="kto"`): TRL's KTOTrainer on unpaired good/bad completions;
paired preference files are split into unpaired rows (`data.formats.preference.to_unpaired`)."""
