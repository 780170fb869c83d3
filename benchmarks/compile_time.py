"""Compile time of the decode step `grok-mini generate` runs (`generate.decode_step`), at any depth.

    python benchmarks/compile_time.py --layers 8 64        # int8 weights, bfloat16, one device

Nothing is allocated: the model, its KV cache and the sampler are shapes only (`Grok.abstract`,
`jax.eval_shape`), and jax traces, lowers and compiles the step against them. So Grok-1's 64 layers
compile on a device that could not hold them. Prints, per layer count, the seconds to trace and lower
and the seconds XLA takes to compile (a fresh process: no compilation cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import environment  # noqa: E402

import grok_mini  # noqa: E402
from grok_mini.generate import Sampler, decode_step  # noqa: E402


def compile_seconds(layers: int, batch: int, context: int) -> tuple[float, float]:
    """(trace + lower seconds, compile seconds) of decode_step for `layers` full-width Grok-1 layers."""
    config = dataclasses.replace(grok_mini.preset("grok-1"), num_layers=layers)
    model = grok_mini.Grok.abstract(config, dtype=jnp.bfloat16, param_dtype=jnp.int8)
    graphdef, state = nnx.split(model)
    cache = jax.eval_shape(lambda: model.init_cache(batch, context))
    sampler = jax.eval_shape(lambda: Sampler.argmax(batch))
    tokens = jax.ShapeDtypeStruct((batch,), jnp.int32)
    start = time.perf_counter()
    lowered = decode_step.lower(graphdef, state, tokens, cache, sampler, 1)
    traced = time.perf_counter()
    lowered.compile()
    return traced - start, time.perf_counter() - traced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--context", type=int, default=1024, help="KV cache length")
    args = parser.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)  # every compile is timed from scratch
    print(f"# Decode-step compile time, {environment()}\n")
    print(f"int8 weights, bfloat16 activations, batch {args.batch}, KV cache of {args.context} positions\n")
    print("| layers | trace + lower (s) | compile (s) |")
    print("| ---: | ---: | ---: |")
    for layers in args.layers:
        lower, compile_ = compile_seconds(layers, args.batch, args.context)
        print(f"| {layers} | {lower:.1f} | {compile_:.1f} |", flush=True)


if __name__ == "__main__":
    main()
