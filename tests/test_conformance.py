"""Our logits against the official Grok-1 code's, on the fixture checkpoint it wrote and ran."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import grok_mini.layers as layers
import grok_mini.moe as moe
from grok_mini import GrokConfig, generate, load_checkpoint
from tests.conftest import FIXTURE, relative_error
from tests.conftest import forward as jitted_forward

F32_BOUND = 1e-4
BF16_BOUND = 0.1


def forward(model, tokens):
    return np.asarray(jitted_forward(model, jnp.asarray(tokens)), np.float32)


@pytest.fixture(scope="module")
def model_f32(fixture_config):
    return load_checkpoint(FIXTURE, fixture_config, dtype=jnp.float32)


def test_float32_logits_match_official(model_f32, reference):
    logits = forward(model_f32, reference["tokens"])
    assert relative_error(logits, reference["logits"]) < F32_BOUND
    np.testing.assert_array_equal(logits.argmax(-1), reference["logits"].argmax(-1))


def test_float32_greedy_through_kv_cache_matches_official(model_f32, reference):
    new = generate(model_f32, reference["tokens"][0], len(reference["greedy"]))
    np.testing.assert_array_equal(new, reference["greedy"])


def test_bfloat16_logits_within_tolerance(fixture_config, reference):
    model = load_checkpoint(FIXTURE, fixture_config, dtype=jnp.bfloat16)
    logits = forward(model, reference["tokens"])
    assert relative_error(logits, reference["logits"]) < BF16_BOUND
    assert relative_error(logits, reference["logits_bf16"]) < BF16_BOUND
    new = generate(model, reference["tokens"][0], len(reference["greedy_bf16"]))
    np.testing.assert_array_equal(new, reference["greedy_bf16"])


# ---- the conformance test is sensitive: each plausible porting mistake fails it ------------------

def interleaved_rope(x, positions, base=GrokConfig.rope_base):
    """The other RoPE convention: pairs (0,1), (2,3), ... rotate together."""
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (jnp.arange(d // 2, dtype=jnp.float32) * 2 / d)
    angles = positions.astype(jnp.float32)[:, :, None, None] * inv_freq
    x32 = x.astype(jnp.float32)
    even, odd = x32[..., 0::2], x32[..., 1::2]
    rotated = jnp.stack([even * jnp.cos(angles) - odd * jnp.sin(angles),
                         even * jnp.sin(angles) + odd * jnp.cos(angles)], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)


class Identity(nnx.Module):
    def __call__(self, x):
        return x


def drop_post_norms(model):
    for layer in model.decoder_layers:
        layer.rms_norm_1 = Identity()
        layer.rms_norm_3 = Identity()


@pytest.mark.parametrize("mistake", ["interleaved_rope", "silu", "no_post_norms", "no_tanh_cap"])
def test_each_porting_mistake_breaks_float32_conformance(mistake, fixture_config, reference, monkeypatch):
    model = load_checkpoint(FIXTURE, fixture_config, dtype=jnp.float32)
    if mistake == "interleaved_rope":
        monkeypatch.setattr(layers, "rotary_embedding", interleaved_rope)
    elif mistake == "silu":
        monkeypatch.setattr(moe, "gelu_tanh", jax.nn.silu)
    elif mistake == "no_post_norms":
        drop_post_norms(model)
    elif mistake == "no_tanh_cap":
        monkeypatch.setattr(GrokConfig, "max_attn_val", 1e9)  # 1e9·tanh(x/1e9) == x
    logits = np.asarray(model(jnp.asarray(reference["tokens"])), np.float32)
    assert relative_error(logits, reference["logits"]) > F32_BOUND
