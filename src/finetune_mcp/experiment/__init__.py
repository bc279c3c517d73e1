"""Experiments (`start_experiment`): arms (named loss settings) × seeds, every other training
setting shared, each arm × seed a full training run, all scored on the same held-out rows, then
statistics that say only what the seeds support.

Owns: `spec` (the experiment spec: arms, seeds, the shared training config, `run_config` per run),
`start` (its start checks and placement, in the server), `workflow` (the worker body: the runs one
after another in one process through `train.workflow.run_training`), `shared_model` (the base
model loaded once, LoRA re-initialised per run), `progress` (progress over all runs in the
experiment's events), `scoring` (held-out metrics of a just-trained model), `metrics` (their names
and directions), `stats` (spread, paired bootstrap interval, exact sign-flip test, verdicts),
`table` (table.json: the one result every reader reads) and `report` (report.md + plot.png).
"""
