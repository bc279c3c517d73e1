"""Benchmark: fused entropy-weighted linear CE (ours) against the anchors, side by side, one run.

Task (as in shared/PERFORMANCE.md): the LoRA loss head, lm_head W [V, d] frozen, bf16, N tokens,
5 % of labels ignored; loss = Σ w·CE / N_valid with w = 1 + H / log V (detached); forward +
backward w.r.t. X. Median of `--iters` after `--warmup` runs, timed with CUDA events, in `--rounds`
passes over the providers (the best median is kept: a long GEMM run heats the card and lowers its
clocks, which would otherwise penalise whoever runs after the heaviest anchor). "peak+ MB"
is the allocator's peak above the inputs, dX included. Errors against an fp32 reference computed
from the same bf16 inputs (the torch oracle on upcast X, W); anchors that compute plain CE (no
weights) are compared with the plain-CE reference.

    python benchmarks/entropy_ce.py                      # both heads, both distributions
    python benchmarks/entropy_ce.py --shapes qwen3-4b --dists synthetic --sweep
    python benchmarks/entropy_ce.py --variants --shapes qwen3-4b   # each loss variant against linear
    python benchmarks/entropy_ce.py --variants --device cpu --shapes tiny --tokens 32 --dists synthetic \\
        --warmup 1 --iters 2 --rounds 2 --json /tmp/v.json   # CPU smoke run

`--variants` times every built-in weight function (loss variant) of ours against `linear` at the
same head and tokens (LoRA: W frozen, forward + backward w.r.t. X): `--rounds` rounds, the variants
in a rotated order each round, each round the median of `--iters`; the figure is the median over
rounds, and the issue's target is each variant within 3 % of linear. Errors against the fp32 oracle
with the same variant (top_entropy's: a bf16 token whose H is within rounding of the threshold
lands on the other side of it than in fp32; at small N one such flip moves dX visibly, at 8,192
tokens hardly). `--device cpu` runs the torch path with wall-clock timing (a smoke run of
the script's code at a tiny shape, not a measurement); the JSON goes to
`results/entropy_ce_variants_<device>.json` unless `--json` says otherwise.

Distributions: `synthetic` (x ~ N(0, 1), logits of std 3: mean H ≈ 7.5 nats, flat-ish) and
`real` (a peakier, trained-model-like mix: logits of std 1.8 plus one spike of height U(0, 16)
on the label 70 % of the time, on a random token otherwise). The mean entropy is printed.
Each anchor is optional: a missing package prints 'not installed'.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from finetune_mcp.kernels import linear_entropy_ce
from finetune_mcp.kernels.torch_entropy_ce import ChunkedEntropyCE
from finetune_mcp.kernels.weights import BUILTIN_WEIGHT_FNS, WeightSpec

SHAPES = {"qwen3-4b": (2560, 151936), "llama3-8b": (4096, 128256)}
SMOKE_SHAPES = {"tiny": (64, 8003)}  # for a quick CPU run of the script's code paths (V odd on purpose)
IGNORE = -100


@dataclass
class Case:
    x: torch.Tensor  # [N, d] bf16, requires grad
    w: torch.Tensor  # [V, d] bf16, frozen
    y: torch.Tensor  # [N] int64, 5 % IGNORE
    n_valid: int


@dataclass
class Row:
    name: str
    entropy: str
    ms: float | None = None
    peak_mb: float | None = None
    loss_err: float | None = None
    dx_err: float | None = None
    dx_cos: float | None = None
    note: str = ""


def make_case(d: int, vocab: int, n: int, dist: str, seed: int, device: str = "cuda") -> Case:
    g = torch.Generator(device=device).manual_seed(seed)
    w = torch.randn(vocab, d, device=device, generator=g) * (3.0 / math.sqrt(d))  # [V, d]: logits std 3
    y = torch.randint(0, vocab, (n,), device=device, generator=g)
    if dist == "synthetic":
        x = torch.randn(n, d, device=device, generator=g)
    else:
        # Spike on the label (70 %) or a random token: adding k·W_t/|W_t|² to x adds k to z_t.
        x = 0.6 * torch.randn(n, d, device=device, generator=g)
        other = torch.randint(0, vocab, (n,), device=device, generator=g)
        hit = torch.rand(n, device=device, generator=g) < 0.7
        t = torch.where(hit, y, other)
        k = 16.0 * torch.rand(n, 1, device=device, generator=g)
        wt = w[t]
        x = x + k * wt / wt.pow(2).sum(-1, keepdim=True)
    ignored = torch.rand(n, device=device, generator=g) < 0.05
    y = torch.where(ignored, IGNORE, y)
    return Case(x.bfloat16().requires_grad_(), w.bfloat16(), y, int((~ignored).sum()))


def reference(case: Case, spec: WeightSpec | None) -> tuple[float, torch.Tensor, float]:
    """fp32 loss, dX and mean H from the same bf16 inputs (the torch oracle on upcast X, W)."""
    x = case.x.detach().float().requires_grad_()
    loss, _, ent, _ = ChunkedEntropyCE.apply(
        x, case.w.float(), None, case.y, spec, IGNORE, None, None, 256
    )
    loss.backward()
    valid = case.y != IGNORE
    return loss.item(), x.grad, (ent[valid].mean().item())


def weights_of(h: torch.Tensor, vocab: int) -> torch.Tensor:
    return (1.0 + h.detach().float() / math.log(vocab)).clamp(0.0, 10.0)


# ---- providers: each returns a loss tensor (backward is called by the harness) ----------------------------


def ours(case: Case) -> torch.Tensor:
    return linear_entropy_ce(case.x, case.w, case.y, weight_fn="linear", implementation="triton").loss


def ours_with(config) -> Callable[[Case], torch.Tensor]:
    from finetune_mcp.kernels.triton_entropy_ce import fused_linear_entropy_ce

    def run(case: Case) -> torch.Tensor:
        return fused_linear_entropy_ce(case.x, case.w, case.y, spec=WeightSpec(), config=config)[0]

    return run


def torch_reference(case: Case) -> torch.Tensor:
    return linear_entropy_ce(case.x, case.w, case.y, weight_fn="linear", implementation="torch").loss


def naive(case: Case) -> torch.Tensor:
    z = (case.x @ case.w.t()).float()  # [N, V]
    lse = torch.logsumexp(z, -1)
    p = torch.softmax(z, -1)
    h = lse - (p * z).sum(-1)
    valid = case.y != IGNORE
    ce = lse - z.gather(1, torch.where(valid, case.y, 0)[:, None]).squeeze(1)
    w = weights_of(h, z.shape[1]) * valid
    return (w * ce).sum() / valid.sum()


_compiled_chunk = None


def _chunk_grad(x, w, y, valid, inv_norm):
    z = (x @ w.t()).float()
    lse = torch.logsumexp(z, -1)
    p = torch.exp(z - lse[:, None])
    h = lse - (p * z).sum(-1)
    ce = lse - z.gather(1, y[:, None]).squeeze(1)
    wt = (1.0 + h / math.log(z.shape[1])).clamp(0.0, 10.0) * valid
    g = p - torch.nn.functional.one_hot(y, z.shape[1]).float()
    g = g * (wt * inv_norm)[:, None]
    return (wt * ce).sum() * inv_norm, (g.to(w.dtype) @ w)


class _CompiledChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, y, chunk):
        valid = y != IGNORE
        ys = torch.where(valid, y, 0)
        inv_norm = 1.0 / valid.sum().clamp(min=1).float()
        dx = torch.empty_like(x)
        loss = x.new_zeros((), dtype=torch.float32)
        for s in range(0, x.shape[0], chunk):
            part, dx[s : s + chunk] = _compiled_chunk(x[s : s + chunk], w, ys[s : s + chunk], valid[s : s + chunk], inv_norm)
            loss = loss + part
        ctx.save_for_backward(dx)
        return loss

    @staticmethod
    def backward(ctx, g):
        (dx,) = ctx.saved_tensors
        return dx * g.to(dx.dtype), None, None, None


def chunked_compile(case: Case) -> torch.Tensor:
    global _compiled_chunk
    if _compiled_chunk is None:
        _compiled_chunk = torch.compile(_chunk_grad, dynamic=False)
    return _CompiledChunked.apply(case.x, case.w, case.y, 1024)


def liger_plain(case: Case) -> torch.Tensor:
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    return liger_fused_linear_cross_entropy(case.x, case.w, case.y, ignore_index=IGNORE, reduction="mean")


def liger_entropy(case: Case) -> torch.Tensor:
    from liger_kernel.ops.fused_linear_scaled_cross_entropy import LigerFusedLinearScaledCrossEntropyFunction

    nll, h = LigerFusedLinearScaledCrossEntropyFunction.apply(case.x, case.w, case.y, 1.0, IGNORE, 1, True)
    valid = case.y != IGNORE
    return (weights_of(h, case.w.shape[0]) * valid * nll).sum() / valid.sum()


def trl_chunked(case: Case) -> torch.Tensor:
    from trl.kernels import ChunkedLogProbFunction

    valid = case.y != IGNORE
    logp, h, *_ = ChunkedLogProbFunction.apply(
        case.x, case.w, None, torch.where(valid, case.y, 0), 1.0, 32768, None, 1.0, ("entropy",)
    )
    return -(weights_of(h, case.w.shape[0]) * valid * logp).sum() / valid.sum()


@torch.no_grad()
def _entropy_pass(x: torch.Tensor, w: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    out = []
    for s in range(0, x.shape[0], chunk):
        z = (x[s : s + chunk] @ w.t()).float()
        lse = torch.logsumexp(z, -1)
        out.append(lse - (torch.softmax(z, -1) * z).sum(-1))
    return torch.cat(out)


def cce_entropy(case: Case) -> torch.Tensor:
    from cut_cross_entropy import linear_cross_entropy

    h = _entropy_pass(case.x.detach(), case.w)
    ce = linear_cross_entropy(case.x, case.w, case.y, ignore_index=IGNORE, reduction="none")
    valid = case.y != IGNORE
    return (weights_of(h, case.w.shape[0]) * valid * ce).sum() / valid.sum()


PROVIDERS: list[tuple[str, str, bool, Callable[[Case], torch.Tensor]]] = [
    # name, entropy?, weighted? (else compared with the plain-CE reference), fn
    ("ours: fused Triton (cuBLAS + epilogue)", "exact", True, ours),
    ("naive eager (fp32 logits)", "exact", True, naive),
    ("chunked (1,024) + torch.compile, grad in fwd", "exact", True, chunked_compile),
    ("our chunked torch reference (oracle)", "exact", True, torch_reference),
    ("Liger fused linear CE, plain mean CE", "none", False, liger_plain),
    ("Liger fused scaled CE (SM90 CuTe) + H, weighted", "exact", True, liger_entropy),
    ("TRL 1.15 ChunkedLogProbFunction + H, weighted", "exact", True, trl_chunked),
    ("Cut Cross-Entropy + separate entropy pass", "exact", True, cce_entropy),
]


def _median_ms(fn: Callable[[], None], warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def _step(fn: Callable[[Case], torch.Tensor], case: Case) -> torch.Tensor:
    case.x.grad = None
    loss = fn(case)
    loss.backward()
    return loss


def measure(name, entropy, weighted, fn, case, refs, warmup, iters) -> Row:
    row = Row(name, entropy)

    def step() -> torch.Tensor:
        return _step(fn, case)

    try:
        loss = step()  # first call: compile / import errors surface here
    except ImportError as exc:
        row.note = f"not installed ({exc.name or exc})"
        return row
    except Exception as exc:  # an anchor that cannot run here is reported, not fatal
        row.note = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
        return row
    ref_loss, ref_dx = refs[weighted]
    row.loss_err = abs(loss.item() - ref_loss) / abs(ref_loss)
    dx = case.x.grad.float()
    row.dx_err = ((dx - ref_dx).norm() / ref_dx.norm()).item()
    row.dx_cos = torch.nn.functional.cosine_similarity(dx.flatten(), ref_dx.flatten(), dim=0).item()
    row.ms = _median_ms(step, warmup, iters)
    case.x.grad = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    row.peak_mb = (torch.cuda.max_memory_allocated() - base) / 1e6  # dX is allocated inside: included
    case.x.grad = None
    if not weighted:
        row.note = "plain CE: no entropy, no weights"
    return row


def gemm_ms(case: Case, warmup: int, iters: int) -> float:
    x = case.x.detach()
    return _median_ms(lambda: torch.mm(x, case.w.t()), warmup, iters)


def kernel_split(case: Case, fn: Callable[[Case], torch.Tensor] = ours, verbose: bool = True) -> dict[str, float]:
    """One forward+backward of ours under the profiler: GPU ms per kernel family."""
    from torch.profiler import ProfilerActivity, profile

    fn(case).backward()  # warm (compile) outside the profile
    case.x.grad = None
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn(case).backward()
        torch.cuda.synchronize()
    split: dict[str, float] = {}
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        name = ev.key.lower()
        if "entropy_ce" in name:
            key = "epilogue"
        elif any(s in name for s in ("gemm", "nvjet", "sm90", "cutlass", "xmma")):
            key = "gemm"
        else:
            key = "other"
        if verbose:
            print(f"    {ev.key[:90]}: {t / 1e3:.2f} ms x{ev.count}")
        split[key] = split.get(key, 0.0) + t / 1e3
    case.x.grad = None
    return split


def diagnose(case: Case, iters: int = 10) -> None:
    """Where does wall time go beyond the kernels: CPU issue time, hidden syncs, GPU busy fraction."""
    from torch.profiler import ProfilerActivity, profile

    def step() -> None:
        case.x.grad = None
        ours(case).backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    step()
    torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    cpu = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        cpu.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1e3 / iters
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e3 / iters
    span = (max(e.time_range.end for e in kernels) - min(e.time_range.start for e in kernels)) / 1e3 / iters
    print(f"  diag: CPU issue {statistics.median(cpu):.2f} ms/iter, back-to-back wall {wall:.2f} ms/iter, "
          f"GPU busy {busy:.2f} ms/iter over a span of {span:.2f} ms/iter", flush=True)
    case.x.grad = None


def epilogue_sweep(case: Case) -> None:
    """GPU time of the epilogue kernel alone (profiler), per launch shape, at the default chunk."""
    from finetune_mcp.kernels.triton_entropy_ce import EpilogueConfig

    for block_v, warps in ((8192, 16), (4096, 8), (2048, 4), (1024, 2)):
        cfg = EpilogueConfig(block_v=block_v, num_warps=warps)
        times = [kernel_split(case, ours_with(cfg), verbose=False).get("epilogue", float("nan")) for _ in range(3)]
        print(f"  epilogue block {block_v} warps {warps}: {statistics.median(times):.2f} ms "
              f"(one fwd+bwd)", flush=True)
    case.x.grad = None


def sweep(case: Case, warmup: int, iters: int) -> list[tuple[str, float]]:
    from finetune_mcp.kernels.triton_entropy_ce import EpilogueConfig

    out = []
    for chunk in (512, 768, 896, 1024):
        if chunk * case.w.shape[0] * 2 > (300 << 20):
            continue
        for block_v, warps in ((8192, 16), (4096, 8), (2048, 4)):
            cfg = EpilogueConfig(block_v=block_v, num_warps=warps, chunk_tokens=chunk)
            row = measure(f"chunk {chunk} block {block_v} warps {warps}", "", True,
                          ours_with(cfg), case, _REFS, warmup, iters)
            out.append((row.name, row.ms if row.ms is not None else float("nan"), row.peak_mb or 0.0))
            print(f"  sweep {row.name}: {row.ms} ms, peak+ {row.peak_mb} MB {row.note}", flush=True)
    return out


# ---- --variants: every built-in loss variant against linear --------------------------------------


def _median_wall_ms(fn: Callable[[], None], warmup: int, iters: int) -> float:
    """The CPU counterpart of `_median_ms`: wall-clock per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _device_tag(device: str) -> str:
    """'h100' / 'h200' / ... from the CUDA device name (the results files' suffix); 'cpu' on the CPU."""
    if device != "cuda":
        return "cpu"
    for word in torch.cuda.get_device_name().lower().split():
        if word[:1] in "abhlv" and word[1:].isdigit():
            return word
    return "cuda"


def variant_rows(case: Case, device: str, warmup: int, iters: int, rounds: int) -> list[dict]:
    """Per built-in variant: ms (median over rounds), ratio to linear, errors against its fp32 oracle."""
    impl = "triton" if device == "cuda" else "torch"
    timer = _median_ms if device == "cuda" else _median_wall_ms
    steps = {}
    rows = {}
    for fn in BUILTIN_WEIGHT_FNS:
        spec = WeightSpec(fn=fn)

        def loss_of(c: Case, spec: WeightSpec = spec) -> torch.Tensor:
            return linear_entropy_ce(c.x, c.w, c.y, weight_fn=spec, implementation=impl).loss

        steps[fn] = loss_of
        ref_loss, ref_dx, _ = reference(case, spec)
        loss = _step(loss_of, case)  # first call: compiles this variant's epilogue
        dx = case.x.grad.float()
        rows[fn] = {
            "variant": fn,
            "loss_err": abs(loss.item() - ref_loss) / max(abs(ref_loss), 1e-30),
            "dx_err": ((dx - ref_dx).norm() / ref_dx.norm().clamp(min=1e-30)).item(),
            "dx_cos": torch.nn.functional.cosine_similarity(dx.flatten(), ref_dx.flatten(), dim=0).item(),
            "rounds_ms": [],
        }
        case.x.grad = None
        del ref_dx, dx
    order = list(BUILTIN_WEIGHT_FNS)
    for r in range(rounds):  # rotate the order: no variant always runs right after the same one
        for fn in order[r % len(order):] + order[: r % len(order)]:
            rows[fn]["rounds_ms"].append(timer(lambda fn=fn: _step(steps[fn], case), warmup, iters))
            case.x.grad = None
    base = statistics.median(rows["linear"]["rounds_ms"])
    for row in rows.values():
        row["ms"] = statistics.median(row["rounds_ms"])
        row["ratio_to_linear"] = row["ms"] / base
        row["within_3pct"] = row["ratio_to_linear"] <= 1.03
    return list(rows.values())


def run_variants(args: argparse.Namespace) -> int:
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--variants on cuda needs a GPU; --device cpu runs the torch path (a smoke run)")
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"# {name} | torch {torch.__version__} | triton {triton_version} | {time.strftime('%Y-%m-%d')}"
          f" | variants, {args.rounds} rounds x median of {args.iters}", flush=True)
    result = {"device": name, "torch": torch.__version__, "triton": triton_version,
              "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv]),
              "tokens": args.tokens, "rounds": args.rounds, "iters": args.iters, "warmup": args.warmup,
              "target_ratio": 1.03, "cases": []}
    for shape in args.shapes:
        d, vocab = {**SHAPES, **SMOKE_SHAPES}[shape]
        for dist in args.dists:
            case = make_case(d, vocab, args.tokens, dist, seed=0, device=device)
            rows = variant_rows(case, device, args.warmup, args.iters, args.rounds)
            print(f"\n## {shape} (d = {d}, V = {vocab}), N = {args.tokens}, {dist} logits, {device}\n")
            print("| variant | ms | × linear | within 3 % | loss rel err | dX rel err | dX cosine |\n"
                  "|---|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['variant']} | {r['ms']:.2f} | {r['ratio_to_linear']:.3f} | "
                      f"{'yes' if r['within_3pct'] else 'NO'} | {r['loss_err']:.1e} | {r['dx_err']:.1e} | "
                      f"{r['dx_cos']:.6f} |", flush=True)
            result["cases"].append({"shape": shape, "d": d, "vocab": vocab, "dist": dist, "rows": rows})
            del case
            if device == "cuda":
                torch.cuda.empty_cache()
    path = args.json or f"benchmarks/results/entropy_ce_variants_{_device_tag(device)}.json"
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {path}")
    return 0


_REFS: dict[bool, tuple[float, torch.Tensor]] = {}


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=[*SHAPES, *SMOKE_SHAPES])
    ap.add_argument("--dists", nargs="+", default=["synthetic", "real"], choices=["synthetic", "real"])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--sweep", action="store_true", help="also time chunk / block / warps variants of ours")
    ap.add_argument("--rounds", type=int, default=None,
                    help="timing rounds; providers: best median kept (default 2); --variants: median (default 5)")
    ap.add_argument("--epilogue-sweep", action="store_true", help="profiler time of the epilogue per launch shape")
    ap.add_argument("--diag", action="store_true", help="CPU issue time, hidden syncs, GPU busy time of ours")
    ap.add_argument("--only", nargs="*", help="substrings of provider names to run")
    ap.add_argument("--json", help="write all rows here")
    ap.add_argument("--variants", action="store_true", help="time each built-in loss variant against linear")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: --variants only (smoke)")
    args = ap.parse_args(argv)
    if args.variants:
        args.rounds = args.rounds or 5
        return run_variants(args)
    args.rounds = args.rounds or 2
    if args.device != "cuda":
        ap.error("--device cpu is for --variants only (the provider comparison needs CUDA)")
    import triton

    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
          f"{time.strftime('%Y-%m-%d')}", flush=True)
    results = []
    for shape in args.shapes:
        d, vocab = SHAPES[shape]
        for dist in args.dists:
            case = make_case(d, vocab, args.tokens, dist, seed=0)
            ref_w, ref_dx_w, mean_h = reference(case, WeightSpec())
            ref_p, ref_dx_p, _ = reference(case, None)
            _REFS.clear()
            _REFS.update({True: (ref_w, ref_dx_w), False: (ref_p, ref_dx_p)})
            g = gemm_ms(case, args.warmup, args.iters)
            flops = 4 * args.tokens * d * vocab
            print(f"\n## {shape} (d = {d}, V = {vocab}), N = {args.tokens}, {dist} logits (mean H = "
                  f"{mean_h:.2f} nats, log V = {math.log(vocab):.2f}); one bf16 GEMM X·Wᵀ: {g:.2f} ms "
                  f"({2 * args.tokens * d * vocab / g / 1e9:.0f} TFLOP/s)", flush=True)
            if args.diag:
                diagnose(case)
            if args.epilogue_sweep:
                epilogue_sweep(case)
            if args.sweep and dist == args.dists[0]:
                sweep(case, 2, 10)
            rows = []
            selected = [p for p in PROVIDERS if not args.only or any(s in p[0] for s in args.only)]
            for name, ent, weighted, fn in selected:
                row = measure(name, ent, weighted, fn, case, _REFS, args.warmup, args.iters)
                rows.append(row)
                print(f"  {row.name}: {fmt(row.ms, '.2f')} ms {row.note}", flush=True)
            for _ in range(args.rounds - 1):  # re-time in provider order again; keep each one's best median
                for row, (_, _, _, fn) in zip(rows, selected, strict=True):
                    if row.ms is not None:
                        row.ms = min(row.ms, _median_ms(lambda fn=fn, c=case: _step(fn, c), args.warmup, args.iters))
                        case.x.grad = None
            if any("ours" in r.name for r in rows):
                try:
                    split = kernel_split(case)
                    print("  ours, GPU time by kernel family (ms, one fwd+bwd, under the profiler): "
                          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(split.items())), flush=True)
                except Exception as exc:
                    print(f"  profiler split failed: {exc}")
            print("\n| implementation | entropy? | ms | × GEMM | TFLOP/s (4·N·d·V) | peak+ MB | loss rel err "
                  "| dX rel err | dX cosine | note |\n|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r.name} | {r.entropy} | {fmt(r.ms, '.1f')} | "
                      f"{fmt(r.ms / g if r.ms else None, '.2f')} | {fmt(flops / r.ms / 1e9 if r.ms else None, '.0f')} | "
                      f"{fmt(r.peak_mb, ',.0f')} | {fmt(r.loss_err, '.1e')} | {fmt(r.dx_err, '.1e')} | "
                      f"{fmt(r.dx_cos, '.6f')} | {r.note} |")
            results.append({"shape": shape, "dist": dist, "gemm_ms": g, "mean_h": mean_h,
                            "rows": [r.__dict__ for r in rows]})
            del case
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
