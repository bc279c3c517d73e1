"""Several GPUs for one run: DDP through torchrun, one worker process per GPU.

The engine is the one people already trust (torch.distributed / accelerate, which the Trainer
and Unsloth support); this module only decides how many GPUs a job gets and builds the launch
command. A local job on GPUs 0 and 1 holds the queue slot `gpu:0,1`, which the manager counts as
both `gpu:0` and `gpu:1`; its worker sees CUDA_VISIBLE_DEVICES=0,1. A RunPod job asks the pod
for `gpu_count` GPUs and the pod's worker launches the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from finetune_mcp.errors import BackendError
from finetune_mcp.jobs.placement import GpuInfo, Placement


def spread(placement: Placement, num_gpus: int | str, gpus: Sequence[GpuInfo]) -> Placement:
    """Extend a one-GPU placement to `num_gpus` (an int, or "auto": every local GPU that fits)."""
    if num_gpus == 1:
        return placement
    if placement.backend == "runpod":
        count = 1 if num_gpus == "auto" else int(num_gpus)
        return replace(placement, details={**placement.details, "gpu_count": count},
                       reason=f"{placement.reason}; {count} GPUs on the pod (DDP)" if count > 1 else placement.reason)
    if placement.device != "cuda":
        if num_gpus == "auto":
            return placement
        raise BackendError(
            f"num_gpus={num_gpus} needs {num_gpus} CUDA GPUs and this run is placed on the CPU (no suitable local "
            "GPU); use num_gpus=1, or target='runpod' for a multi-GPU pod"
        )
    need = placement.details.get("required_gb") or 0.0
    first = next(g for g in gpus if g.index == placement.gpu_index)
    others = sorted((g for g in gpus if g.index != first.index and g.free_gb >= need), key=lambda g: -g.free_gb)
    fitting = [first, *others]
    wanted = len(fitting) if num_gpus == "auto" else int(num_gpus)
    if len(fitting) < wanted:
        raise BackendError(
            f"num_gpus={num_gpus} needs {wanted} GPUs with ≥ {need:.1f} GB free each (DDP keeps a full copy of the "
            f"model per GPU); {len(fitting)} of the {len(gpus)} local GPUs qualify. Use num_gpus={len(fitting)}, "
            "free GPU memory, or target='runpod'"
        )
    chosen = sorted(g.index for g in fitting[:wanted])
    if len(chosen) == 1:
        return placement
    return replace(
        placement,
        gpu_index=chosen[0],
        details={**placement.details, "gpu_indices": chosen},
        reason=f"{placement.reason}; DDP over GPUs {', '.join(map(str, chosen))}",
    )


def distributed_command(command: Sequence[str], processes: int) -> list[str]:
    """`python -m X ...` → `python -m torch.distributed.run --standalone --nproc_per_node N -m X ...`.

    torchrun starts one worker per GPU (LOCAL_RANK picks the device); the Trainer reads the
    environment it sets, reduces gradients over NCCL (gloo on CPU), and our callbacks write on rank 0.
    """
    if processes <= 1:
        return list(command)
    if len(command) < 3 or command[1] != "-m":
        raise BackendError(f"cannot launch {' '.join(command)!r} under torchrun: it must be 'python -m module ...'")
    python, *rest = command
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *rest]


CLUSTER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "NUM_NODES")


def cluster_command(command: Sequence[str], processes: int, env: Mapping[str, str]) -> list[str]:
    """One node of a multi-node run: `python -m torch.distributed.run --nnodes N --node_rank R
    --master_addr A --master_port P --nproc_per_node n -m X ...`, from the rendezvous variables a RunPod
    Instant Cluster sets on every node (MASTER_ADDR / MASTER_PORT of the primary node, NODE_RANK,
    NUM_NODES). Every node runs the same worker; global rank 0 (on node 0) writes the run directory."""
    missing = [name for name in CLUSTER_VARIABLES if not env.get(name)]
    if missing:
        raise BackendError(f"this node lacks {', '.join(missing)}; a multi-node run needs the rendezvous variables "
                           "of a RunPod Instant Cluster")
    if len(command) < 3 or command[1] != "-m":
        raise BackendError(f"cannot launch {' '.join(command)!r} under torchrun: it must be 'python -m module ...'")
    python, *rest = command
    return [python, "-m", "torch.distributed.run", f"--nnodes={int(env['NUM_NODES'])}",
            f"--node_rank={int(env['NODE_RANK'])}", f"--master_addr={env['MASTER_ADDR']}",
            f"--master_port={int(env['MASTER_PORT'])}", f"--nproc_per_node={max(1, processes)}", *rest]
