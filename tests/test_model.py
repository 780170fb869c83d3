"""Invariants of the model on small random configs: causality, KV cache, padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_mini import Grok, generate
from grok_mini.layers import rotary_embedding
from tests.conftest import TINY, forward, relative_error

TOKENS = np.array([[5, 17, 3, 44, 9, 60, 12, 7, 31, 2],
                   [8, 8, 91, 23, 4, 76, 5, 19, 1, 50]], np.int32)


def test_logits_shape_and_dtype(tiny_model):
    logits = forward(tiny_model, TOKENS)
    assert logits.shape == (2, 10, TINY.vocab_size)
    assert logits.dtype == jnp.float32
    bf16 = forward(Grok(TINY, rngs=nnx.Rngs(0)), TOKENS)
    assert bf16.dtype == jnp.bfloat16


def test_causality_later_tokens_do_not_change_earlier_logits(tiny_model):
    changed = TOKENS.copy()
    changed[:, 6:] = (changed[:, 6:] + 11) % TINY.vocab_size
    changed[changed == TINY.pad_token] = 1
    a, b = np.asarray(forward(tiny_model, TOKENS)), np.asarray(forward(tiny_model, changed))
    np.testing.assert_allclose(a[:, :6], b[:, :6], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[:, 6:], b[:, 6:], atol=1e-3)  # and the change did reach later positions


@pytest.mark.parametrize("prefill", [1, 4, 9])
def test_kv_cache_decode_equals_full_forward(tiny_model, prefill):
    full = np.asarray(forward(tiny_model, TOKENS))
    cache = tiny_model.init_cache(batch=2, length=16)
    logits, cache = tiny_model.extend(TOKENS[:, :prefill], cache)
    pieces = [np.asarray(logits)]
    for t in range(prefill, TOKENS.shape[1]):
        logits, cache = tiny_model.extend(TOKENS[:, t:t + 1], cache)
        pieces.append(np.asarray(logits))
    assert relative_error(np.concatenate(pieces, axis=1), full) < 1e-5
    np.testing.assert_array_equal(np.asarray(cache[0].step), [10, 10])


def test_right_padding_leaves_real_positions_unchanged(tiny_model):
    padded = np.concatenate([TOKENS, np.full((2, 5), TINY.pad_token, np.int32)], axis=1)
    np.testing.assert_allclose(np.asarray(forward(tiny_model, padded))[:, :10], np.asarray(forward(tiny_model, TOKENS)),
                               rtol=1e-5, atol=1e-5)


def test_pad_keys_are_masked(tiny_model):
    # A pad token in the middle is invisible to later queries: its key is masked out, so changing
    # what the pad's own query computes cannot matter, and the logits differ from a real token there.
    with_pad = TOKENS.copy()
    with_pad[:, 3] = TINY.pad_token
    with_other = TOKENS.copy()
    with_other[:, 3] = 1
    a, b = np.asarray(forward(tiny_model, with_pad)), np.asarray(forward(tiny_model, with_other))
    assert not np.allclose(a[:, 4:], b[:, 4:], atol=1e-3)


def test_greedy_generate_matches_argmax_of_full_forward(tiny_model):
    new = generate(tiny_model, TOKENS[0], 5)
    sequence = list(TOKENS[0])
    for _ in range(5):  # independent check: re-run the whole sequence each step, no cache
        sequence.append(int(np.asarray(forward(tiny_model, np.array([sequence])))[0, -1].argmax()))
    np.testing.assert_array_equal(new, sequence[10:])


def test_rope_preserves_norm_and_depends_on_relative_position():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 1, 1, 1, 16)).astype(np.float32)
    def score(m, n):
        rq = rotary_embedding(jnp.asarray(q), jnp.array([[m]]))
        rk = rotary_embedding(jnp.asarray(k), jnp.array([[n]]))
        return float(jnp.sum(rq * rk))
    assert score(3, 1) == pytest.approx(score(12, 10), rel=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), rel=1e-3)
    rotated = rotary_embedding(jnp.asarray(q), jnp.array([[7]]))
    assert float(jnp.linalg.norm(rotated)) == pytest.approx(float(np.linalg.norm(q)), rel=1e-6)


@pytest.mark.parametrize("tokens, message", [
    ([[1, 2, TINY.vocab_size]], f"token id {TINY.vocab_size} is outside the vocabulary"),
    ([[1, -3, 2]], "token id -3 is outside the vocabulary"),
    (np.zeros((1, 0), np.int32), "non-empty"),
    ([1, 2, 3], r"\[batch, length\]"),
    ([[1.5, 2.0]], "integer ids"),
    (np.ones((1, TINY.sequence_len + 1), np.int32), "exceed sequence_len=64"),
])
def test_bad_tokens_are_refused(tiny_model, tokens, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(tokens)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="elsewhere the dot gives bfloat16 (layers.matmul)")
@pytest.mark.parametrize("blocks", [None, 1, 8])
def test_bfloat16_matmul_on_a_cpu_rounds_the_float32_sum_once(blocks):
    """layers.matmul in bfloat16 on a CPU: the products accumulate in float32 and the scaled result is rounded to
    bfloat16 once, so every output is within half a bfloat16 step of the exact value (rounding the product
    first, then again after the scales, lands up to a whole step off)."""
    from grok_mini.layers import matmul

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 256)), jnp.bfloat16)
    if blocks is None:
        w, scales = jnp.asarray(rng.standard_normal((256, 96)) / 16, jnp.bfloat16), None
        exact_w = np.asarray(w, np.float64)
    else:
        w = jnp.asarray(rng.integers(-127, 128, (256, 96)), jnp.int8)
        scales = jnp.asarray(rng.uniform(1e-3, 2e-2, (blocks, 96)), jnp.bfloat16)
        exact_w = np.asarray(w, np.float64) * np.repeat(np.asarray(scales, np.float64), 256 // blocks, axis=0)
    exact = np.asarray(x, np.float64) @ exact_w
    got = np.asarray(matmul(x, w, scales, jnp.bfloat16), np.float64)
    half_step = 2.0 ** (np.floor(np.log2(np.abs(exact))) - 8)  # bfloat16 keeps 8 significant bits
    float32_sum = 1e-5 * (np.abs(np.asarray(x, np.float64)) @ np.abs(exact_w))  # accumulation error allowance
    assert np.all(np.abs(got - exact) <= half_step + float32_sum)
