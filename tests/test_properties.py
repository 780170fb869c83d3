"""Property tests (hypothesis) on a small random model: the invariants hold for any input drawn."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from grok_mini import Grok
from grok_mini.generate import sample_tokens
from grok_mini.layers import rotary_embedding
from grok_mini.moe import dense_moe, gate_matrix, route, sparse_moe
from tests.conftest import TINY, forward, relative_error

MODEL = Grok(TINY, dtype=jnp.float32, rngs=nnx.Rngs(7))
LENGTH = 12
PROPERTY = settings(max_examples=12, deadline=None, derandomize=True)

real_tokens = st.lists(st.integers(1, TINY.vocab_size - 1), min_size=LENGTH, max_size=LENGTH)


@PROPERTY
@given(shift=st.integers(0, 5000), m=st.integers(0, 2000), n=st.integers(0, 2000), seed=st.integers(0, 2**16))
def test_rope_scores_depend_only_on_relative_position(shift, m, n, seed):
    rng = np.random.default_rng(seed)
    q, k = (jnp.asarray(rng.normal(size=(1, 1, 2, 16)), jnp.float32) for _ in range(2))

    def score(a, b):
        return jnp.sum(rotary_embedding(q, jnp.array([[a]])) * rotary_embedding(k, jnp.array([[b]])), axis=-1)

    np.testing.assert_allclose(score(m, n), score(m + shift, n + shift), rtol=2e-3, atol=2e-3)


@PROPERTY
@given(tokens=real_tokens, cut=st.integers(1, LENGTH - 1), seed=st.integers(0, 2**16))
def test_causality(tokens, cut, seed):
    changed = np.array(tokens)
    changed[cut:] = np.random.default_rng(seed).integers(1, TINY.vocab_size, LENGTH - cut)
    a = np.asarray(forward(MODEL, np.array([tokens])))
    b = np.asarray(forward(MODEL, changed[None]))
    np.testing.assert_allclose(a[:, :cut], b[:, :cut], rtol=1e-5, atol=1e-5)


@PROPERTY
@given(tokens=real_tokens, real=st.integers(1, LENGTH))
def test_right_padding_invariance(tokens, real):
    padded = np.array(tokens)
    padded[real:] = TINY.pad_token
    unpadded = np.array(tokens[:real] + [1] * (LENGTH - real))  # different tail, same real prefix
    a = np.asarray(forward(MODEL, padded[None]))[:, :real]
    b = np.asarray(forward(MODEL, unpadded[None]))[:, :real]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@PROPERTY
@given(tokens=real_tokens, prefill=st.integers(1, LENGTH))
def test_kv_cache_equals_full_forward(tokens, prefill):
    tokens = np.array([tokens])
    step = nnx.jit(lambda model, t, cache: model.extend(t, cache))
    cache = MODEL.init_cache(1, LENGTH)
    logits, cache = step(MODEL, tokens[:, :prefill], cache)
    pieces = [logits]
    for t in range(prefill, LENGTH):
        logits, cache = step(MODEL, tokens[:, t:t + 1], cache)
        pieces.append(logits)
    assert relative_error(np.concatenate(pieces, axis=1), forward(MODEL, tokens)) < 1e-5


# ---- the MoE fast path and the sampler ---------------------------------------------------------

SAMPLE = jax.jit(sample_tokens)
EXPERTS = MODEL.decoder_layers[0].moe.experts


@PROPERTY
@given(seed=st.integers(0, 2**16), tokens=st.sampled_from([1, 5, 16]), skew=st.floats(0.0, 8.0))
def test_sparse_moe_equals_dense_reference(seed, tokens, skew):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(tokens, TINY.emb_size)), jnp.float32)
    crowd_expert_0 = skew * (np.arange(TINY.num_experts) == 0)  # uneven loads, some experts left empty
    logits = rng.normal(size=(tokens, TINY.num_experts)) + crowd_expert_0
    gates, ids = route(jnp.asarray(logits), TINY.num_selected_experts)
    dense = dense_moe(EXPERTS, x, gate_matrix(gates, ids, TINY.num_experts))
    assert relative_error(sparse_moe(EXPERTS, x, gates, ids), dense) < 1e-5


@PROPERTY
@given(seed=st.integers(0, 2**16), temperature=st.floats(0.2, 3.0), top_k=st.integers(1, 40),
       top_p=st.floats(0.01, 1.0))
def test_sampling_stays_inside_the_allowed_set(seed, temperature, top_k, top_p):
    from tests.test_generate import allowed_reference

    logits = np.round(np.random.default_rng(seed).normal(size=40).astype(np.float32) * 3, 1)
    allowed = allowed_reference(logits, temperature, top_k, top_p)
    x = logits.astype(np.float64) / temperature
    mass = np.cumsum(np.sort(np.exp(x - x.max()) / np.exp(x - x.max()).sum())[::-1])
    assume(np.min(np.abs(mass - top_p)) > 1e-4)  # float32 and float64 may disagree exactly at the boundary
    draws = 256
    keys = jax.random.split(jax.random.key(seed), draws)
    tokens = np.asarray(SAMPLE(jnp.broadcast_to(jnp.asarray(logits), (draws, logits.size)), keys,
                               jnp.full((draws,), temperature), jnp.full((draws,), top_k), jnp.full((draws,), top_p)))
    assert allowed[tokens].all()
