"""top_entropy's global quantile across ranks: two real gloo processes (CPU) with different tokens
each get one threshold, the quantile of both ranks' valid tokens together, and so one mask rule;
without a process group the option is the per-call quantile."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from finetune_mcp.kernels.weights import WeightSpec, batch_quantile, entropy_weights, gathered_quantile

# rank 0 holds low entropies, rank 1 high ones, with different counts and ignored tokens
RANK_VALUES = [torch.tensor([0.1, 0.2, 0.3, 9.0, 0.4]), torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])]
RANK_VALID = [torch.tensor([True, True, True, False, True]), torch.ones(7, dtype=torch.bool)]


def _rank(rank: int, port: int, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        values, valid = RANK_VALUES[rank], RANK_VALID[rank]
        spec = WeightSpec(fn="top_entropy", quantile=0.5, global_quantile=True)
        weights = entropy_weights(values, 1.0, spec, valid=valid)
        out[rank] = (gathered_quantile(values, valid, 0.5).item(), weights.tolist())
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_share_one_threshold() -> None:
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_rank, args=(_free_port(), out), nprocs=2, join=True)
    everything = torch.cat([v[m] for v, m in zip(RANK_VALUES, RANK_VALID, strict=True)])
    expected = torch.quantile(everything, 0.5).item()  # 0.1 .. 0.4 and 2 .. 8: the median is 2.0 + ...
    assert out[0][0] == pytest.approx(expected) and out[1][0] == pytest.approx(expected)
    # rank 0's valid tokens are all below the shared threshold: none trains there (per rank, half would)
    assert out[0][1] == [0.0, 0.0, 0.0, 1.0, 0.0]  # the ignored 9.0 is weighted but never counted
    assert out[1][1] == [float(v >= expected) for v in RANK_VALUES[1].tolist()]
    local = batch_quantile(RANK_VALUES[0], RANK_VALID[0], 0.5).item()
    assert local < expected  # what each rank would have used on its own


def test_without_a_process_group_it_is_the_calls_quantile() -> None:
    values, valid = RANK_VALUES[1], RANK_VALID[1]
    assert gathered_quantile(values, valid, 0.3).item() == pytest.approx(torch.quantile(values, 0.3).item())
    plain = entropy_weights(values, 1.0, WeightSpec(fn="top_entropy", quantile=0.3), valid=valid)
    both = entropy_weights(values, 1.0, WeightSpec(fn="top_entropy", quantile=0.3, global_quantile=True), valid=valid)
    assert torch.equal(plain, both)
