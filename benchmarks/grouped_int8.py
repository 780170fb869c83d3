"""One int8 expert matrix for the routed copies of N tokens: our Pallas kernel against tokamax's ragged_dot.

    python benchmarks/grouped_int8.py --out grouped_int8.md              # on a GPU (tokamax and qwix installed)
    python benchmarks/grouped_int8.py --smoke --out /tmp/smoke.md        # tiny sizes, anywhere

The same product each way: the N·2 token copies (uniform random top-2 routing over 8 experts) times
their expert's int8 matrix with its bfloat16 scales, as released (Grok-1's gate [8, 6144, 32768], one
scale block; its down projection [8, 32768, 6144], eight):

- ours: `kernels.expert_tiles_matmul` on the copies laid out in tiles as `moe.sparse_moe` lays them;
- XLA, the tiles' scan: the same tiles, one XLA matmul each (sparse_moe past MAX_DECODE_TOKENS);
- XLA, all experts: one product batched over the experts on buckets of N rows (`moe.capacity_moe`'s;
  up to 128 tokens);
- tokamax: `tokamax.ragged_dot` on the copies sorted by expert, the weights as a `qwix.QArray` (int8
  values, the release's scales as its subchannel scales), implementation "mosaic" (Pallas Mosaic GPU;
  on Hopper a warp-specialised kernel that dequantises in registers). Its Hopper kernel
  wants the weights [E, out, in] in memory: given ours ([E, in, out]) it transposes them first, so
  it is timed both ways (a one-off transposed copy, swapped back inside the timed function, which XLA
  cancels).

Every output is checked against the float32 product of the dequantised weights (relative error
printed); the bound is the bytes of the experts the copies use, at the copy bandwidth measured in
the same run (benchmarks/measure.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import measure  # benchmarks/measure.py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from moe import hashed_int8  # noqa: E402  (benchmarks/moe.py)

from grok_mini import kernels  # noqa: E402
from grok_mini.layers import matmul  # noqa: E402
from grok_mini.moe import route  # noqa: E402
from grok_mini.quant import dequantize  # noqa: E402

EXPERTS, TOP_K = 8, 2


def routed_copies(num_tokens: int, size_in: int, seed: int = 0):
    """(copies sorted by expert [M, in] bf16, their experts [M], group sizes [E])."""
    kx, kr = jax.random.split(jax.random.key(seed))
    _, ids = route(jax.random.normal(kr, (num_tokens, EXPERTS)), TOP_K)
    ids = np.sort(np.asarray(ids).reshape(-1))
    rows = jax.random.normal(kx, (ids.size, size_in), jnp.bfloat16)
    return rows, ids, np.bincount(ids, minlength=EXPERTS)


def tile_layout(sizes: np.ndarray, tile_rows: int):
    """sparse_moe's layout for copies sorted by expert (sizes [E] of them each): each expert's run padded
    to whole tiles of t rows. Returns (row of each copy in the tiles [M], expert of each tile [T], t)."""
    t = min(tile_rows, max(1, int(sizes.sum()) // TOP_K))
    tiles = -(-sizes // t)
    first = np.concatenate([[0], np.cumsum(tiles)[:-1]])
    slot = np.concatenate([first[e] * t + np.arange(sizes[e]) for e in range(EXPERTS)]).astype(np.int32)
    return slot, np.repeat(np.arange(EXPERTS), tiles).astype(np.int32), t


def reference(rows, ids, w, scales) -> np.ndarray:
    """float32: each copy times its expert's dequantised matrix (one expert at a time)."""
    return np.concatenate([np.asarray(rows[ids == e].astype(jnp.float32) @ dequantize(w[e], scales[e]))
                           for e in np.unique(ids)])


def variants(rows, ids, sizes, w, scales, tile_rows: int):
    """name → (jitted function, its arguments); each returns the copies' outputs [M, out] in sorted order."""
    found = {}
    slot, tile_expert, t = tile_layout(sizes, tile_rows)
    num_tiles = tile_expert.size

    @jax.jit
    def ours(rows, w, scales):
        tiles = jnp.zeros((num_tiles * t, rows.shape[1]), rows.dtype).at[slot].set(rows)
        out = kernels.expert_tiles_matmul(tiles.reshape(num_tiles, t, -1), jnp.asarray(tile_expert), w, scales)
        return out.reshape(num_tiles * t, -1)[slot]

    found[f"ours (Pallas Triton, {num_tiles} tiles of {t})"] = (ours, (rows, w, scales))

    @jax.jit
    def scan(rows, w, scales):  # what sparse_moe runs past MAX_DECODE_TOKENS: one XLA matmul per tile
        tiles = jnp.zeros((num_tiles * t, rows.shape[1]), rows.dtype).at[slot].set(rows)

        def one(_, tile):
            h, e = tile
            return None, matmul(h, w[e], scales[e], jnp.bfloat16)

        out = jax.lax.scan(one, None, (tiles.reshape(num_tiles, t, -1), jnp.asarray(tile_expert)))[1]
        return out.reshape(num_tiles * t, -1)[slot]

    found[f"XLA, the tiles' scan ({num_tiles} tiles of {t})"] = (scan, (rows, w, scales))

    capacity = ids.size // TOP_K  # N rows an expert: dropless whatever the routing, as capacity_moe sizes them
    if capacity > 128:  # prefill: E·N rows would be mostly padding
        capacity = 0
    position = np.concatenate([np.arange(s) for s in sizes]).astype(np.int32)
    bucket_slot = ids.astype(np.int32) * capacity + position

    @jax.jit
    def all_experts(rows, w, scales):
        buckets = jnp.zeros((EXPERTS * capacity, rows.shape[1]), rows.dtype).at[bucket_slot].set(rows)
        out = jax.vmap(lambda h, w, s: matmul(h, w, s, jnp.bfloat16))(
            buckets.reshape(EXPERTS, capacity, -1), w, scales)
        return out.reshape(EXPERTS * capacity, -1)[bucket_slot]

    if capacity:
        found[f"XLA, all experts batched ({capacity} rows each)"] = (all_experts, (rows, w, scales))

    try:
        import qwix
        import tokamax
    except ImportError as error:
        print(f"tokamax not measured: {error}", flush=True)
        return found
    group_sizes = jnp.asarray(sizes, jnp.int32)
    w_transposed = jnp.swapaxes(w, 1, 2)  # [E, out, in]: the layout tokamax's Hopper kernel reads

    def tokamax_product(stored_transposed: bool):  # "mosaic": "triton" is not registered without jax-triton
        def product(rows, w, scales):
            w = jnp.swapaxes(w, 1, 2) if stored_transposed else w  # cancels the kernel's own swap
            return tokamax.ragged_dot(rows, qwix.QArray(qvalue=w, scale=scales), group_sizes,
                                      preferred_element_type=jnp.bfloat16, implementation="mosaic")

        return jax.jit(product)

    found["tokamax mosaic, weights [E, in, out]"] = (tokamax_product(False), (rows, w, scales))
    found["tokamax mosaic, weights stored [E, out, in]"] = (tokamax_product(True), (rows, w_transposed, scales))
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--tile-rows", type=int, default=256,
                        help="our kernel's tile rows (sparse_moe's default on a GPU)")
    parser.add_argument("--smoke", action="store_true", help="tiny matrices")
    args = parser.parse_args(argv)
    width, ffn = (256, 512) if args.smoke else (6144, 32768)
    lines = [f"# One int8 expert matrix for the routed copies of N tokens ({measure.environment()})", ""]

    def emit(line: str = "") -> None:
        lines.append(line)
        print(line, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")

    bandwidth = measure.copy_bandwidth()
    emit(f"Copy bandwidth {bandwidth}. Bound: the int8 weights and scales of the experts the copies use, "
         "read once. Error: relative to the float32 product of the dequantised weights.")
    emit("")
    emit("| matrix | tokens | experts used | way | ms | × bound | TFLOP/s | relative error |")
    emit("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for name, (size_in, size_out, blocks) in {"gate [E, D, F]": (width, ffn, 1),
                                              "down [E, F, D]": (ffn, width, 8)}.items():
        w = hashed_int8((EXPERTS, size_in, size_out), 0)
        scales = jnp.full((EXPERTS, blocks, size_out), 1 / (74 * size_in**0.5), jnp.bfloat16)
        per_expert = measure.array_bytes({"w": w, "s": scales}) // EXPERTS
        for n in args.tokens:
            rows, ids, sizes = routed_copies(n, size_in, seed=n)
            used = int((sizes > 0).sum())
            want = reference(rows, ids, w, scales)
            for way, (fn, fn_args) in variants(rows, ids, sizes, w, scales, args.tile_rows).items():
                try:
                    error = measure.relative_error(np.asarray(fn(*fn_args), np.float32), want)
                    seconds = measure.seconds_per_call(fn, *fn_args)
                except Exception as failure:  # one way failing must not lose the others
                    emit(f"| {name} | {n} | {used} | {way} | failed: {type(failure).__name__}: "
                         f"{str(failure).splitlines()[0][:160]} | | | |")
                    continue
                over = measure.times_bound(seconds, used * per_expert, bandwidth)
                tflops = 2 * ids.size * size_in * size_out / seconds / 1e12
                emit(f"| {name} | {n} | {used} | {way} | {seconds * 1e3:.3f} | {over:.2f} | {tflops:.0f} "
                     f"| {error:.1e} |")
        del w


if __name__ == "__main__":
    main()
