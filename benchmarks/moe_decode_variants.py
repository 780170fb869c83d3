"""Decode-time MoE on a GPU: how close to the bandwidth bound does each way of reading one expert's int8 weights get?

One Grok-1 MoE layer (D=6144, F=32768, 8 experts, int8 weights + bf16 scales), N tokens decoded,
each token's k=2 copies run as tiles of one row through their expert (as sparse_moe does):
- dynamic: index the [E, D, F] stack with the traced expert id (what sparse_moe does today);
- switch:  lax.switch over E branches, each with a static slice w[e] (only the taken branch runs);
- reduce:  the int8 product written as one fused multiply-reduce (int8 read once, never materialised);
- kernel:  the Pallas kernel (grok_mini/kernels.py), at several block shapes (`--kernel-only`: just these).
Prints ms per call and the ratio to the bound (selected experts' bytes / copy bandwidth measured in the
same run, benchmarks/measure.py). `--smoke`: D=256, F=512, to check the script on any machine (on a CPU
the kernel runs in Pallas's interpreter).
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import measure  # benchmarks/measure.py: timing, copy bandwidth, bytes, × bound
import numpy as np

from grok_mini import kernels
from grok_mini.layers import matmul
from grok_mini.moe import gelu_tanh

E, K = 8, 2


def reduce_matmul(x, weight, scales):
    """x [t, in] · int8 weight [in, out] as one fused multiply-reduce: the int8 is read once, never materialised."""
    blocks = scales.shape[-2]
    xb = x.astype(jnp.float32).reshape(x.shape[0], blocks, -1)  # [t, b, i]
    wb = weight.reshape(blocks, -1, weight.shape[-1])  # [b, i, o]
    partial = jnp.sum(xb[:, :, :, None] * wb[None].astype(jnp.float32), axis=2)  # [t, b, o]
    return jnp.einsum("tbo,bo->to", partial, scales.astype(jnp.float32)).astype(jnp.bfloat16)


def ffn(w, rows, expert, reduce=False):  # w: dict of (weight, scales) stacks; expert traced or static
    def project(name, h):
        weight, scales = w[name]
        if reduce:
            return reduce_matmul(h, weight[expert], scales[expert])
        return matmul(h, weight[expert], scales[expert], jnp.bfloat16)
    return project("linear_1", gelu_tanh(project("linear", rows)) * project("linear_v", rows))


@functools.partial(jax.jit, static_argnames="variant")
def run(w, tiles, tile_expert, variant):
    def one_tile(_, tile):
        rows, expert = tile
        if variant == "dynamic":
            return None, ffn(w, rows, expert)
        if variant == "reduce":
            return None, ffn(w, rows, expert, reduce=True)
        branches = [functools.partial(lambda e, r: ffn(w, r, e), e) for e in range(E)]
        return None, jax.lax.switch(expert, branches, rows)
    return jax.lax.scan(one_tile, None, (tiles, tile_expert))[1]


KERNEL_SHAPES = {  # the default and one change at a time
    "kernel default": kernels.KernelShape(),
    "kernel inner 128": kernels.KernelShape(block_inner=128),
    "kernel min_programs 512": kernels.KernelShape(min_programs=512),
    "kernel min_programs 2048": kernels.KernelShape(min_programs=2048),
    "kernel cols 256": kernels.KernelShape(block_cols=256),
    "kernel 3 stages": kernels.KernelShape(num_stages=3),
    "kernel 8 warps": kernels.KernelShape(num_warps=8),
}


@functools.partial(jax.jit, static_argnames="shape")
def run_kernel(w, tiles, tile_expert, shape):
    def project(name, h):
        weight, scales = w[name]
        return kernels.expert_tiles_matmul(h, tile_expert, weight, scales, shape=shape)
    return project("linear_1", gelu_tanh(project("linear", tiles)) * project("linear_v", tiles))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kernel-only", action="store_true", help="only the Pallas kernel's block shapes")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 4, 8, 32, 64], help="decode batch sizes")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (D=256, F=512), tokens 1 and 8")
    args = parser.parse_args()
    D, F = (256, 512) if args.smoke else (6144, 32768)
    token_counts = [1, 8] if args.smoke else args.tokens
    rng = np.random.default_rng(0)
    def int8(shape, blocks):
        weight = jnp.asarray(rng.integers(-127, 128, size=shape, dtype=np.int8))
        scales = jnp.asarray(rng.uniform(1e-3, 2e-3, size=(E, blocks, shape[-1])), jnp.bfloat16)
        return weight, scales
    w = {"linear": int8((E, D, F), 1), "linear_v": int8((E, D, F), 1), "linear_1": int8((E, F, D), 8)}
    expert_bytes = measure.array_bytes(w) / E
    bandwidth = measure.copy_bandwidth()
    print(f"{measure.environment()}; copy bandwidth {bandwidth}; one expert {expert_bytes / 1e9:.3f} GB")
    print("| tokens | experts read | variant | ms | bound ms | × bound |")
    print("| ---: | ---: | --- | ---: | ---: | ---: |")
    for tokens in token_counts:
        ids = np.stack([rng.choice(E, size=K, replace=False) for _ in range(tokens)])  # [tokens, K]
        used = sorted(set(ids.reshape(-1).tolist()))  # one tile of `tokens` rows per expert used
        tile_expert = jnp.asarray(used, jnp.int32)
        tiles = jnp.asarray(rng.normal(size=(len(used), tokens, D)), jnp.bfloat16)
        distinct = len(used)
        needed_bytes = distinct * expert_bytes
        variants = {} if args.kernel_only else {v: functools.partial(run, variant=v)
                                                for v in ("dynamic", "switch", "reduce")}
        variants |= {name: functools.partial(run_kernel, shape=shape) for name, shape in KERNEL_SHAPES.items()}
        for variant, fn in variants.items():
            try:
                seconds = measure.seconds_per_call(fn, w, tiles, tile_expert)
            except Exception as error:  # one shape failing to compile must not lose the others
                print(f"| {tokens} | {distinct} | {variant} | failed: {type(error).__name__}: {str(error)[:200]} |")
                continue
            print(f"| {tokens} | {distinct} | {variant} | {seconds * 1e3:.3f} | "
                  f"{measure.bound_seconds(needed_bytes, bandwidth) * 1e3:.3f} | "
                  f"{measure.times_bound(seconds, needed_bytes, bandwidth):.2f} |", flush=True)


if __name__ == "__main__":
    main()
