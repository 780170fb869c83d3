"""For the notebooks: drawing, widgets, exercises and the trained toy model they show.

Nothing in the model core imports this package (tests/test_layout.py checks), so the model runs
without matplotlib or a notebook; the notebooks import it beside the core.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
TRAINED_TOY = DATA / "toy_trained"  # made by scripts/make_trained_toy.py

__all__ = ["DATA", "TRAINED_TOY", "trained_toy", "trained_toy_history"]


@functools.cache
def _trained():
    import jax.numpy as jnp

    from grok_mini.load import load_hf
    from grok_mini.tokenizer import load_tokenizer

    return load_hf(TRAINED_TOY / "model", dtype=jnp.float32), load_tokenizer(TRAINED_TOY / "tokenizer.model")


def trained_toy():
    """(model, tokenizer): the toy Grok trained on the embedded corpus, float32, as stored in the package.

    The same objects on every call (a notebook that changes the model should copy it first:
    `nnx.clone(model)`).
    """
    return _trained()


def trained_toy_history() -> dict:
    """The trained toy's training settings, history (losses, expert load per step), versions and wall time."""
    return json.loads((TRAINED_TOY / "training.json").read_text())
