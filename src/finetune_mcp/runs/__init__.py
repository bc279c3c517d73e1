"""The run directory contract: the ground floor every other package stands on.

A run (training, enhancement, evaluation, ...) writes only into its run directory
`$FINETUNE_MCP_HOME/runs/<job_id>/`; every reader (the job manager tailing events, the card, the
metrics tool, the CLI, the RunPod client) goes through here. Owns: `rundir` (the layout, atomic
writes, the events log and its readers), `metric_names` (the names of every logged series),
`session` (the worker's process-level set-up: log file, spec, error event, exit code), `disk`
(write failures named for the user, the space reserve), `artifacts` (which weights a run left — adapter,
merged model, GGUF exports, checkpoints — its trackers' record and a pod's checkpoint transfer: the one
reader every tool uses).
Depends on nothing but `errors`.
"""
