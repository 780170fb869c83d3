"""The int8 forward pass on one CPU device against the official Grok-1 code's, side by side.

    python benchmarks/cpu_int8.py                      # ours against the official formulation in our code
    python benchmarks/cpu_int8.py --official ~/grok-1 --official-python ~/grok1-env/bin/python

4 decoder layers of a Grok-1-shaped model (widening factor 8, 8 experts of which 2 a token, key size
64) at width 256 and 1024, int8 matrices with bfloat16 scales, bfloat16 activations, one batch of 512
tokens, the whole forward pass to the logits. Timed in one run, on the same weights:

- `ours`: `Grok` as a user gets it (`quantize_model`, the default sparse dispatch);
- `official formulation`: the same model with `dispatch="official"` (every token copy through every
  expert, each matrix dequantised first, as xai-org/grok-1 computes it), no dependency needed;
- `official code` (with --official): xai-org/grok-1's own `model.py`, imported from the checkout you
  name, run by `official_forward.py` in the Python you name (its pins: jax 0.4.25, dm-haiku 0.0.12).
  Its logits are checked against ours with float32 activations on the same weights: further from them
  than twice our own bfloat16 logits are (bfloat16 rounding) means the two did not compute the same
  model (a different model is off by about 1), and the run stops.

On one device the official code takes one scale block per matrix, so every matrix here is quantised
with one scale per output column (the release's 8-block matrices hold the same scale in each block).
The last line is the acceptance number: the smallest ratio official / ours over the widths.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from measure import environment, relative_error, side_by_side  # noqa: E402

import grok_mini  # noqa: E402
from grok_mini.load import quantize_model  # noqa: E402
from grok_mini.params import param_row  # noqa: E402
from grok_mini.quant import quantize  # noqa: E402

TOKENS = 512


def benchmark_config(width: int) -> grok_mini.GrokConfig:
    """Grok-1's shape at `width`: heads of 64, 4 query heads a K/V head, widening factor 8, 4 layers."""
    heads = width // 64
    return dataclasses.replace(
        grok_mini.preset("toy"), emb_size=width, key_size=64, num_q_heads=heads, num_kv_heads=max(1, heads // 4),
        num_layers=4, widening_factor=8.0, sequence_len=TOKENS, attn_output_multiplier=1 / math.sqrt(64),
        embedding_multiplier_scale=math.sqrt(width))


def one_scale_block(model: grok_mini.Grok) -> grok_mini.Grok:
    """`model` in int8 with one scale per output column of every matrix, stored in as many equal blocks as
    the model's layout has (so our code and the official code on one device read the same numbers)."""
    quantized = quantize_model(model)
    floats = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    flat = dict(nnx.to_flat_state(nnx.state(quantized, nnx.Param)))
    for path, variable in flat.items():
        if path[-1] != "scales":
            continue
        w_path = (*path[:-1], "w")
        one = quantize(np.asarray(floats[w_path].get_value(), np.float32), 1)
        flat[w_path].set_value(jnp.asarray(one.weight))
        blocks = variable.get_value().shape[-2]
        variable.set_value(jnp.asarray(np.repeat(np.asarray(one.scales), blocks, axis=-2), variable.get_value().dtype))
    nnx.update(quantized, nnx.from_flat_state(flat))
    return quantized


def release_arrays(model: grok_mini.Grok) -> dict[str, np.ndarray]:
    """{release path: array} (an int8 matrix's scales, one block, under path + ".scales"): the official params."""
    arrays = {}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        row = param_row(path)
        name = row.release.format(n=path[1]) if row.per_layer else row.release
        value = np.asarray(variable.get_value())
        if path[-1] == "scales":
            arrays[name + ".scales"] = value[..., :1, :].astype(np.float32)  # npz has no bfloat16; cast back there
        else:
            arrays[name] = value
    return arrays


def run_official(model, tokens, python: str, checkout: str, repeats: int) -> tuple[float, np.ndarray, dict]:
    """(median seconds, logits, versions) of the official code's forward pass, in its own process."""
    with tempfile.TemporaryDirectory(prefix="grok1-official-") as folder:
        folder = Path(folder)
        np.savez(folder / "weights.npz", tokens=np.asarray(tokens), **release_arrays(model))
        (folder / "config.json").write_text(json.dumps({**model.config.to_dict(), "repeats": repeats}))
        subprocess.run([python, str(HERE / "official_forward.py"), checkout, str(folder / "weights.npz"),
                        str(folder / "config.json"), str(folder / "out.npz")], check=True)
        out = np.load(folder / "out.npz")
        return float(out["seconds"]), out["logits"], json.loads(str(out["versions"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="256,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="back-to-back calls a sample (the official code: one)")
    parser.add_argument("--official", metavar="CHECKOUT", help="a clone of xai-org/grok-1 (its model.py is imported)")
    parser.add_argument("--official-python", metavar="PYTHON", help="a Python with jax 0.4.25 and dm-haiku 0.0.12")
    args = parser.parse_args()
    if bool(args.official) != bool(args.official_python):
        parser.error("--official and --official-python go together")

    print(f"# CPU int8 forward, {environment()}\n")
    print(f"4 layers, {TOKENS} tokens, bfloat16 activations, int8 weights (one scale per column); "
          f"median of {args.repeats}, seconds\n")
    columns = ["ours", "official formulation"] + (["official code"] if args.official else []) + ["ours, bf16 weights"]
    print("| width | ffn | " + " | ".join(columns) + " | official / ours (tokens/s ratio) |")
    print("| ---: | ---: |" + " ---: |" * (len(columns) + 1))
    ratios = []
    forward = nnx.jit(lambda model, tokens: model(tokens))
    for width in [int(w) for w in args.widths.split(",")]:
        config = benchmark_config(width)
        tokens = jnp.asarray(np.random.default_rng(0).integers(1, config.vocab_size, (1, TOKENS)), jnp.int32)
        float_model = grok_mini.Grok(config, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
        ours = one_scale_block(float_model)
        formulation = one_scale_block(grok_mini.Grok(config, dtype=jnp.bfloat16, rngs=nnx.Rngs(0), dispatch="official"))
        models = {"ours": ours, "official formulation": formulation, "ours, bf16 weights": float_model}
        times = side_by_side({name: (forward, (model, tokens)) for name, model in models.items()},
                             repeats=args.repeats, calls=args.calls)
        reference = "official formulation"
        if args.official:
            times["official code"], logits, versions = run_official(ours, tokens, args.official_python, args.official,
                                                                     args.repeats)
            exact = np.asarray(forward(one_scale_block(grok_mini.Grok(config, dtype=jnp.float32, rngs=nnx.Rngs(0))),
                                       tokens), np.float32)  # the same int8 weights, float32 activations
            theirs = relative_error(logits, exact)
            mine = relative_error(np.asarray(forward(ours, tokens), np.float32), exact)
            print(f"<!-- width {width}: official code {versions}; relative error of the bfloat16 logits against ours "
                  f"in float32: official code {theirs:.1e}, ours {mine:.1e} -->")
            if not theirs <= 2 * mine + 0.02:  # bfloat16 rounding alone; another model is off by about 1
                sys.exit(f"cpu_int8: the official code's logits are {theirs:.2e} from ours in float32, ours in "
                         f"bfloat16 {mine:.2e}: the two did not run the same model")
            reference = "official code"
        ratio = times[reference] / times["ours"]
        ratios.append(ratio)
        print(f"| {width} | {config.ffn_size} | " + " | ".join(f"{times[c]:.3f}" for c in columns)
              + f" | {ratio:.2f}x |")
    print(f"\ncpu_int8_speedup_vs_official: {min(ratios):.2f}")


if __name__ == "__main__":
    main()
