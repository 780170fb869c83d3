"""MoE dispatch, side by side: our sparse path against the dense reference and the official formulation.

    python benchmarks/moe.py                      # CPU: toy width and Grok-1 width (slow); last line is the speedup
    python benchmarks/moe.py --toy-only           # CPU: toy width only
    python benchmarks/moe.py --quick              # CPU: toy width at 256 tokens, once (a check that it runs)
    python benchmarks/moe.py --gpu --out moe_gpu.md           # one GPU: a full-width Grok-1 MoE layer, int8
    python benchmarks/moe.py --gpu --smoke --out /tmp/smoke.md  # the GPU mode at tiny sizes (runs on CPU)

Every implementation runs in the same process on the same inputs; each timing is the median of
several repeats after a warm-up (compilation excluded), with block_until_ready. On CPU the methods
take turns within each repeat, so a busy machine slows them alike. Routing is uniform random
(softmax over random logits, top-2), so every expert gets about N·k/E token copies.

Methods (grok_mini/moe.py): sparse = `sparse_moe` (the model's default; on a GPU with int8 weights, decode
batches take the Pallas kernel or all experts batched), sparse (XLA scan) = the same with those decode paths
off (`int8_kernel=False`), kernel = the tiles through the Pallas kernel at any size (`path="kernel"`),
capacity (dropless) = `capacity_moe` with room for every copy, ragged = `ragged_moe`
(jax.lax.ragged_dot), dense = `dense_moe` (the reference: every expert on every token),
official = `official_dense_moe` (the xai-org/grok-1 formulation: every token copy through every expert).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import measure  # benchmarks/measure.py: timing, copy bandwidth, bytes, × bound
from flax import nnx

from grok_mini import GrokConfig, moe

TOP_K = 2
DISPATCH = {
    "sparse": moe.sparse_moe,  # on a GPU with int8 weights, decode batches take the kernel or all experts batched
    "sparse (XLA scan)": functools.partial(moe.sparse_moe, int8_kernel=False),  # the tiles' scan at every size
    "kernel": functools.partial(moe.sparse_moe, path="kernel"),  # the Pallas kernel's tiles at any size
    "ragged": moe.ragged_moe,
    "dense": lambda experts, x, gates, ids: moe.dense_moe(
        experts, x, moe.gate_matrix(gates, ids, experts.linear.w[...].shape[0])),
    "official": moe.official_dense_moe,
    # every expert once on a bucket of N rows: dropless, no per-expert slicing of the weights
    "capacity (dropless)": lambda experts, x, gates, ids: moe.capacity_moe(
        experts, x, gates, ids, capacity_factor=experts.linear.w[...].shape[0] / ids.shape[-1])[0],
}


def experts_config(emb_size: int, ffn_size: int) -> GrokConfig:
    """A config whose experts have width emb_size and hidden ffn_size (attention fields are unused)."""
    config = GrokConfig(emb_size=emb_size, widening_factor=ffn_size * 1.5 / emb_size, key_size=emb_size // 8,
                        num_q_heads=8, num_kv_heads=8, num_layers=1)
    assert config.ffn_size == ffn_size, (config.ffn_size, ffn_size)
    return config


def float_experts(config: GrokConfig, dtype) -> moe.Experts:
    return moe.Experts(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))


@functools.partial(jax.jit, static_argnums=0)
def hashed_int8(shape: tuple[int, ...], seed: int) -> jax.Array:
    """Pseudo-random int8 bytes, a hash of each element's index: one fused loop, no temporary buffers
    (jax.random at 1.6 G elements needs several times the output's memory)."""
    index = sum(jax.lax.broadcasted_iota(jnp.uint32, shape, d) * math.prod(shape[d + 1:]) for d in range(len(shape)))
    h = (index + jnp.uint32(seed)) * jnp.uint32(0x9E3779B1)
    h = (h ^ (h >> 15)) * jnp.uint32(0x85EBCA77)
    h = h ^ (h >> 13)
    return jax.lax.bitcast_convert_type((h >> 8).astype(jnp.uint8), jnp.int8)  # about uniform in [-128, 127]


def int8_experts(config: GrokConfig, dtype=jnp.bfloat16) -> moe.Experts:
    """Random int8 experts built without ever holding a float copy of the weights (Grok-1 width: 4.8 GB)."""
    experts = nnx.eval_shape(lambda: moe.Experts(config, dtype=dtype, param_dtype=jnp.int8, rngs=nnx.Rngs(0)))
    for seed, linear in enumerate((experts.linear, experts.linear_v, experts.linear_1)):
        w_shape, s_shape = linear.w.get_value().shape, linear.scales.get_value().shape
        linear.w = nnx.Param(hashed_int8(tuple(w_shape), seed))
        fan_in = w_shape[-2]
        linear.scales = nnx.Param(jnp.full(s_shape, 1 / (74 * fan_in**0.5), jnp.bfloat16))  # outputs of unit size
    return experts


def inputs(num_tokens: int, config: GrokConfig, dtype):
    kx, kr, kc = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(kx, (num_tokens, config.emb_size), dtype)
    gates, ids = moe.route(jax.random.normal(kr, (num_tokens, config.num_experts)), TOP_K)
    return x, gates, ids, jax.random.normal(kc, x.shape, dtype)


def compiled(method: str, experts: moe.Experts, *, backward: bool = False, tile_rows: int | None = None):
    """(jitted function of (state, x, gates, ids[, cotangent]), state): the module split once, so a call
    costs only jax.jit's dispatch, not a walk over the module."""
    graphdef, state = nnx.split(experts)
    dispatch = DISPATCH[method]
    if tile_rows is not None:
        dispatch = functools.partial(dispatch, tile_rows=tile_rows)

    def forward(state, x, gates, ids):
        return dispatch(nnx.merge(graphdef, state), x, gates, ids)

    if not backward:
        return jax.jit(forward), state

    def loss(state, x, gates, ids, cotangent):
        return jnp.sum((forward(state, x, gates, ids) * cotangent).astype(jnp.float32))

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2))), state


def log(*parts):
    print(*parts, flush=True)


# ---- CPU ----------------------------------------------------------------------------------------

def cpu_toy_width(token_counts, repeats: int) -> float:
    """Width 512, ffn 1024, float32: forward and forward+backward. Returns official/sparse, forward, at the
    largest token count."""
    config = experts_config(512, 1024)
    experts = float_experts(config, jnp.float32)
    log(f"\n## Toy width: D={config.emb_size}, F={config.ffn_size}, {config.num_experts} experts, top-{TOP_K}, "
        f"float32, uniform random routing; median of {repeats} (ms)\n")
    log("| tokens | pass | sparse | ragged | dense | official | dense / sparse | official / sparse |")
    log("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    speedup = math.nan
    for n in token_counts:
        x, gates, ids, cotangent = inputs(n, config, jnp.float32)
        for backward in (False, True):
            methods = ["sparse", "dense", "official"] + ([] if backward else ["ragged"])
            fns = {}
            for method in methods:
                fn, state = compiled(method, experts, backward=backward)
                fns[method] = (fn, (state, x, gates, ids) + ((cotangent,) if backward else ()))
            t = measure.side_by_side(fns, repeats)
            ragged = "n/a" if backward else f"{t['ragged'] * 1e3:.0f}"
            log(f"| {n} | {'fwd+bwd' if backward else 'forward'} | {t['sparse'] * 1e3:.0f} | {ragged} | "
                f"{t['dense'] * 1e3:.0f} | {t['official'] * 1e3:.0f} | {t['dense'] / t['sparse']:.1f}x | "
                f"{t['official'] / t['sparse']:.1f}x |")
            if n == max(token_counts) and not backward:
                speedup = t["official"] / t["sparse"]
    log("\n(ragged forward only: on CPU jax.lax.ragged_dot is a dense masked product over all experts.)")
    return speedup


def available_memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_grok_width(token_counts, repeats: int):
    """Full Grok-1 expert width, int8 weights (4.8 GB), bfloat16 activations, forward, sparse path only."""
    config = experts_config(6144, 32768)
    log(f"\n## Grok-1 width: D={config.emb_size}, F={config.ffn_size}, {config.num_experts} experts, top-{TOP_K}, "
        f"int8 weights, bfloat16 activations, forward; median of {repeats} (s)\n")
    log("Only the sparse path fits: the dense reference and the official formulation dequantise all 8 experts"
        " first (9.7 GB in bfloat16, which XLA's CPU dot upcasts to float32 on top); the dense reference"
        " ran out of this machine's 23 GB. The sparse path converts one expert matrix at a time (peak 7.4 GB).\n")
    need = 10 * 2**30  # int8 weights 4.8 GB + a float32 copy of one expert matrix per tile + margin
    if available_memory_bytes() < need:
        log(f"skipped: needs about {need / 2**30:.0f} GiB of free memory, "
            f"{available_memory_bytes() / 2**30:.1f} GiB available")
        return
    experts = int8_experts(config)
    log("| tokens | experts chosen | sparse (s) | s per chosen expert |")
    log("| ---: | ---: | ---: | ---: |")
    for n in token_counts:
        x, gates, ids, _ = inputs(n, config, jnp.bfloat16)
        chosen = len(set(jax.device_get(ids).reshape(-1).tolist()))
        fn, state = compiled("sparse", experts)
        seconds = measure.side_by_side({"sparse": (fn, (state, x, gates, ids))}, repeats)["sparse"]
        log(f"| {n} | {chosen} | {seconds:.1f} | {seconds / chosen:.1f} |")


def cpu_main(args):
    log(f"# MoE dispatch on CPU: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"jax {jax.__version__}, backend {jax.default_backend()}, sparse tile_rows {moe.default_tile_rows()}")
    token_counts = [256] if args.quick else [256, 1024, 4096]
    speedup = cpu_toy_width(token_counts, repeats=1 if args.quick else args.repeats)
    if not (args.toy_only or args.quick):
        cpu_grok_width([1, 8], repeats=2)
    log(f"\nforward, {max(token_counts)} tokens, width 512, ffn 1024, 8 experts, top-2, float32: "
        "official formulation / sparse")
    log(f"speedup_vs_official_dense: {speedup:.2f}")


# ---- GPU ----------------------------------------------------------------------------------------

def expert_bytes(experts: moe.Experts) -> int:
    """Bytes one expert's weights occupy (int8 w and bfloat16 scales of linear, linear_v, linear_1:
    every array of the module is a stack over the experts)."""
    return measure.array_bytes(experts) // experts.linear.w[...].shape[0]


def gpu_main(args):
    smoke = args.smoke
    width, ffn = (64, 128) if smoke else (6144, 32768)
    prefill, decode = (64, [1, 8]) if smoke else (2048, [1, 4, 8, 32, 64])
    decode = args.tokens or decode
    matmul_n = 256 if smoke else 8192
    device = jax.devices()[0]
    lines = [f"# MoE dispatch on {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}"
             + (" (smoke test: tiny sizes)" if smoke else ""), ""]

    def emit(line=""):
        lines.append(line)
        log(line)
        if args.out:  # rewritten after every row, so a run cut short still leaves its table
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text("\n".join(lines) + "\n")

    bandwidth = measure.copy_bandwidth()
    flops_peak = measure.matmul_rate(matmul_n)
    emit(f"Measured in this run ({measure.environment()}): copy bandwidth {bandwidth}; "
         f"bfloat16 matmul {flops_peak / 1e12:.0f} TFLOP/s ({matmul_n}³).")
    config = experts_config(width, ffn)
    experts = int8_experts(config)
    per_expert = expert_bytes(experts)
    emit(f"One MoE layer: D={width}, F={ffn}, {config.num_experts} experts, top-{TOP_K}, int8 weights "
         f"({per_expert / 1e6:.0f} MB an expert with scales), bfloat16 activations, uniform random routing; "
         f"sparse tile_rows {moe.default_tile_rows()} unless named.")
    emit("")
    emit("bound = the selected experts' int8 weights + scales read once at the measured copy bandwidth; "
         "FLOPs = the needed 2·N·k·3·D·F (the official formulation does 8 times as many).")
    emit("")
    emit("| case | tokens | method | ms | experts chosen | needed GB/s | % copy BW | × bound | TFLOP/s | "
         "% matmul | official / this |")
    emit("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    verdicts = []
    cases = ([("prefill", prefill)] if args.only in (None, "prefill") else []) + (
        [("decode", d) for d in decode] if args.only in (None, "decode") else [])
    for case, n in cases:
        start = time.perf_counter()
        x, gates, ids, _ = inputs(n, config, jnp.bfloat16)
        selected = len(set(jax.device_get(ids).reshape(-1).tolist()))
        needed_bytes = selected * per_expert
        flops = 2 * n * TOP_K * 3 * width * ffn
        variants = [("sparse", None)] + ([("sparse (XLA scan)", None)] if case == "decode" else [])
        variants += [("dense", None), ("official", None), ("ragged", None), ("capacity (dropless)", None)]
        variants += [("sparse", 128), ("sparse", 512)] if case == "prefill" else []
        variants += [("kernel", None), ("kernel", 32), ("kernel", 64)] if case == "decode" and n > 8 else []
        variants = [(m, tile) for m, tile in variants if args.methods is None or m in args.methods or m == "official"]
        times = {}
        for method, tile in variants:
            name = method if tile is None else f"{method} (tile_rows {tile})"
            try:
                fn, state = compiled(method, experts, tile_rows=tile)
                if args.out and tile is None and (case, n) in (("prefill", prefill), ("decode", 1)):
                    # the compiled program, to see e.g. whether the int8 → bf16 convert is fused into the matmul
                    hlo = fn.lower(state, x, gates, ids).compile().as_text()
                    Path(args.out).with_name(f"moe_{case}{n}_{method.split()[0]}.hlo.txt").write_text(hlo)
                times[name] = measure.seconds_per_call(fn, state, x, gates, ids)
            except Exception as error:  # one path failing (e.g. out of memory) must not lose the others
                times[name] = None
                emit(f"| {case} | {n} | {name} | failed: {type(error).__name__}: {str(error)[:120]} |")
        for name, seconds in times.items():
            if seconds is None:
                continue
            official = times.get("official")
            ratio = f"{official / seconds:.1f}x" if official else "n/a"
            over = measure.times_bound(seconds, needed_bytes, bandwidth)
            emit(f"| {case} | {n} | {name} | {seconds * 1e3:.3f} | {selected} | {needed_bytes / seconds / 1e9:.0f} | "
                 f"{100 / over:.0f}% | {over:.2f} | "
                 f"{flops / seconds / 1e12:.1f} | {100 * flops / seconds / flops_peak:.1f}% | {ratio} |")
        log(f"({case} {n}: {time.perf_counter() - start:.0f} s with compilation)")
        if case == "decode" and times.get("sparse"):
            over = measure.times_bound(times["sparse"], needed_bytes, bandwidth)
            verdicts.append(f"- decode {n} tokens: sparse at {over:.2f}× the bandwidth bound for the "
                            f"{selected} experts it must read: {'within' if over <= 2 else 'NOT within'} 2x")
    emit("")
    for verdict in verdicts:
        emit(verdict)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="one full-width Grok-1 MoE layer on the default device")
    parser.add_argument("--smoke", action="store_true", help="with --gpu: tiny sizes, to check the script anywhere")
    parser.add_argument("--out", help="with --gpu: also write the markdown table to this file")
    parser.add_argument("--only", choices=["prefill", "decode"], help="with --gpu: run only these cases")
    parser.add_argument("--methods", type=lambda s: s.split(","),
                        help="with --gpu: only these methods, comma-separated (official is always run)")
    parser.add_argument("--tokens", type=int, nargs="+", help="with --gpu: decode token counts (default 1 4 8 32 64)")
    parser.add_argument("--toy-only", action="store_true", help="CPU: skip the Grok-1 width section")
    parser.add_argument("--quick", action="store_true",
                        help="CPU: toy width at 256 tokens only, one repeat (a check that the script runs)")
    parser.add_argument("--repeats", type=int, default=3, help="CPU: timed repeats per method (default 3)")
    args = parser.parse_args(argv)
    if args.gpu:
        gpu_main(args)
    else:
        cpu_main(args)


if __name__ == "__main__":
    sys.exit(main())
