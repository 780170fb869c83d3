"""Shared test helpers: the official conformance fixture and small random models."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_mini import Grok, GrokConfig

FIXTURE = Path(__file__).parent / "fixtures" / "grok1-toy-official"

# A random model small enough to build and run in well under a second.
TINY = GrokConfig(vocab_size=97, emb_size=32, key_size=8, num_q_heads=4, num_kv_heads=2, num_layers=2,
                  widening_factor=2.0, sequence_len=64, attn_output_multiplier=8**-0.5,
                  embedding_multiplier_scale=32**0.5)


@nnx.jit
def forward(model: Grok, tokens) -> jax.Array:
    """model(tokens), compiled (op-by-op eager execution is slow on CPU)."""
    return model(tokens)


def relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


@pytest.fixture(scope="session")
def fixture_config() -> GrokConfig:
    return GrokConfig.from_json(FIXTURE / "config.json")


@pytest.fixture(scope="session")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE / "reference.npz"))


@pytest.fixture
def tiny_model() -> Grok:
    return Grok(TINY, dtype=jnp.float32, rngs=nnx.Rngs(0))
