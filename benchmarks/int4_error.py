"""What int4 costs in accuracy: int4 (re-quantised from int8) against int8 and float, on two models.

    python benchmarks/int4_error.py [--groups 32 64 128] [--out benchmarks/results/int4_error.md]

- the trained toy (`grok_mini.teach.trained_toy()`, float32 weights): quantised to int8 by the
  release's recipe, then to int4 from that int8, as a release user would (`load.quantize_model`);
  held-out loss on the trained toy's own held-out windows (the corpus's held-out split, its
  tokenizer, 16 windows of 128 tokens, as in training), and the logits' relative error against float;
- the conformance fixture (tests/fixtures/grok1-toy-official: random int8 weights written by the
  official code, its float32 logits in reference.npz), loaded with `load_checkpoint(quantized=...)`;
  the relative error against the official logits. Its weights are random, so there is no loss to
  measure; the KL divergence from the float model's next-token distribution stands in for it.

Activations are float32 throughout, so the weights' format is the only difference between rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.measure import relative_error  # noqa: E402
from grok_mini import GrokConfig, load_checkpoint  # noqa: E402
from grok_mini.data import heldout_windows, load_corpus  # noqa: E402
from grok_mini.load import quantize_model  # noqa: E402
from grok_mini.quant import Int4, int4_group  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "grok1-toy-official"
WINDOWS, LENGTH = 16, 128  # the trained toy's own held-out evaluation (its training.json)


def toy_heldout(tokenizer, windows: int = WINDOWS, length: int = LENGTH) -> np.ndarray:
    """[windows, length + 1] token windows from the start of the corpus's held-out split."""
    tokens = np.asarray(tokenizer.encode(load_corpus().split()[1]), np.int32)
    return heldout_windows(tokens, length, windows)


def log_probs(model, tokens) -> np.ndarray:
    logits = jax.jit(lambda t: model(t))(jnp.asarray(tokens)).astype(jnp.float32)
    return np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)


def heldout_loss(model, windows: np.ndarray) -> float:
    """Mean next-token cross-entropy in nats (what training reports as held-out loss)."""
    logp = log_probs(model, windows[:, :-1])
    return float(-np.take_along_axis(logp, windows[:, 1:, None], axis=-1).mean())


def kl_from(reference_logp: np.ndarray, logp: np.ndarray) -> float:
    """Mean KL(reference ‖ ours) per position, in nats."""
    return max(0.0, float(np.mean(np.sum(np.exp(reference_logp) * (reference_logp - logp), axis=-1))))  # ≥ 0


def formats(groups) -> list[tuple[str, object]]:
    rows = [("float32", None), ("int8 (release recipe)", True)]
    rows += [(f"int4 experts, group {g}", Int4(g)) for g in groups]
    rows += [(f"int4 experts + attention, group {groups[0]}", Int4(groups[0], attention=True))]
    return rows


def toy_table(groups) -> list[tuple]:
    from grok_mini.teach import trained_toy

    model, tokenizer = trained_toy()
    windows = toy_heldout(tokenizer)
    float_logp = log_probs(model, windows[:, :-1])
    rows = []
    for name, quantized in formats(groups):
        quantised = model if quantized is None else quantize_model(model, quantized)
        logp = log_probs(quantised, windows[:, :-1])
        rows.append((name, heldout_loss(quantised, windows), relative_error(logp, float_logp) if quantized else 0.0,
                     kl_from(float_logp, logp), float(np.mean(logp.argmax(-1) == float_logp.argmax(-1)))))
    return rows


def fixture_table(groups) -> list[tuple]:
    config = GrokConfig.from_json(FIXTURE / "config.json")
    reference = np.load(FIXTURE / "reference.npz")
    tokens, official = reference["tokens"], reference["logits"]
    official_logp = np.asarray(jax.nn.log_softmax(jnp.asarray(official, jnp.float32), axis=-1), np.float64)
    rows = []
    for name, quantized in formats(groups):
        name = name.replace("float32", "float32 (int8 dequantised)").replace(" (release recipe)", " as released")
        model = load_checkpoint(FIXTURE, config, dtype=jnp.float32, quantized=quantized or False)
        logits = np.asarray(jax.jit(lambda t, m=model: m(t))(jnp.asarray(tokens)), np.float64)
        logp = log_probs(model, tokens)
        rows.append((name, relative_error(logits, official), kl_from(official_logp, logp),
                     float(np.mean(logits.argmax(-1) == official.argmax(-1)))))
    return rows


def markdown(toy, fixture, groups, command: str, seconds: float) -> str:
    lines = ["# int4 against int8 and float: held-out loss and logit error", "",
             f"`{command}` ({seconds:.0f} s on {jax.devices()[0].device_kind}, jax {jax.__version__}; float32 "
             "activations)", "",
             f"Trained toy (`grok_mini.teach.trained_toy()`), held-out split, {WINDOWS} windows of {LENGTH} "
             "tokens:", "",
             "| weights | held-out loss (nats) | Δ vs float | logit rel. error vs float | KL vs float (nats) "
             "| same top-1 |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    base = toy[0][1]
    lines += [f"| {n} | {loss:.4f} | {loss - base:+.4f} | {err:.4f} | {kl:.5f} | {agree:.1%} |"
              for n, loss, err, kl, agree in toy]
    lines += ["", "Conformance fixture (random weights; official float32 logits from reference.npz):", "",
              "| weights | logit rel. error vs official | KL vs official (nats) | same top-1 |",
              "| --- | ---: | ---: | ---: |"]
    lines += [f"| {n} | {err:.2e} | {kl:.5f} | {agree:.1%} |" for n, err, kl, agree in fixture]
    taken = ", ".join(f"{int4_group(176, g)} for {g}" for g in groups)
    lines += ["", "Groups are along the input dimension; a matrix whose input size the group does not divide takes "
              f"the largest even divisor below it (the toys' FFN width 176: {taken}; width 128 takes each exactly)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[64, 128, 32])
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    start = time.time()
    toy, fixture = toy_table(args.groups), fixture_table(args.groups)
    command = "python benchmarks/int4_error.py " + " ".join(sys.argv[1:])
    text = markdown(toy, fixture, args.groups, command.strip(), time.time() - start)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
