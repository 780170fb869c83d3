"""The Pallas decode kernel on one Grok-1 expert stack: int8 against packed int4, a few kernel shapes.

    python benchmarks/int4_kernel.py            # on a GPU (on a CPU: --smoke, interpreted, tiny)

Decode of one token sends 2 tiles (its 2 experts) of 1 row each through the gate/value [8, 6144,
32768] and down [8, 32768, 6144] stacks. Prints ms per call and GB/s of the two experts' bytes read.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import measure  # noqa: E402

from grok_mini import kernels  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    e, d, f = (8, 256, 512) if args.smoke else (8, 6144, 32768)
    key = jax.random.key(0)
    tiles = jax.random.normal(key, (2, 1, max(d, f)), jnp.bfloat16)
    tile_expert = jnp.array([1, 5])
    default = kernels.KernelShape()
    variants = [("int8", None, default), ("int4 g64", 64, default),
                ("int4 g64 cols 256", 64, dataclasses.replace(default, block_cols=256)),
                ("int4 g64 cols 64", 64, dataclasses.replace(default, block_cols=64)),
                ("int4 g128", 128, default),
                ("int4 g128 cols 256", 128, dataclasses.replace(default, block_cols=256))]
    print("| matrix | weights | ms per call | GB/s of the 2 experts read |\n| --- | --- | ---: | ---: |")
    for name, size_in, size_out in (("gate [E, D, F]", d, f), ("down [E, F, D]", f, d)):
        x = tiles[..., :size_in]
        for label, group, shape in variants:
            if group is None:
                w = jax.random.randint(key, (e, size_in, size_out), -127, 128, jnp.int8)
                scales = jnp.full((e, 8 if size_in == f else 1, size_out), 1e-3, jnp.bfloat16)
            else:
                w = jax.random.randint(key, (e, size_in // 2, size_out), 0, 256, jnp.int32).astype(jnp.uint8)
                scales = jnp.full((e, size_in // group, size_out), 1e-3, jnp.bfloat16)
            run = jax.jit(lambda x, w, s, shape=shape: kernels.expert_tiles_matmul(x, tile_expert, w, s,
                                                                                    shape=shape))
            try:
                seconds = measure.seconds_per_call(run, x, w, scales)
            except Exception as error:  # a shape Triton refuses: say so, go on
                print(f"| {name} | {label} | failed: {type(error).__name__} {str(error).splitlines()[0][:120]} | |")
                continue
            read = 2 * w[0].nbytes + 2 * scales[0].nbytes
            print(f"| {name} | {label} | {seconds * 1e3:.3f} | {read / seconds / 1e9:,.0f} |", flush=True)
            del w, scales


if __name__ == "__main__":
    main()
