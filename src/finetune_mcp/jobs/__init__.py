"""Jobs: queue, place, run and watch background work of any kind, and survive a restart.

Owns: `store` (SQLite job table, states and transitions), `manager` (the supervisor: start, poll,
cancel, settle), `records` (the job's view built from its run directory), `router` (where a job
goes: local GPU, CPU or RunPod, and why), `vram` (memory estimates), `multi_gpu` (GPU slots and
torchrun), `worker_env` (the allow-listed environment a worker starts with), `backends/` (local
process groups and RunPod pods). Knows job kinds only through the small spec protocol the registry
in `kinds.py` hands it; never imports a capability package.
"""
