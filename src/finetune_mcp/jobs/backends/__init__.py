"""Where a job's worker runs: `base` (the Backend protocol and poll results), `local` (a worker
process group on this machine) and `runpod/` (a worker on a RunPod pod)."""
