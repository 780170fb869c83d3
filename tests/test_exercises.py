"""Every exercise checker accepts the reference solution, reports an untouched stub, and rejects
plausible wrong answers with a hint that names the mistake."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_mini.layers import MultiHeadAttention, rotary_embedding
from grok_mini.teach.exercises import (
    ExerciseFailed,
    attention,
    embeddings,
    full_model,
    generation,
    real_weights,
    rope,
    routing,
    scale,
    tokenization,
    training,
)
from tests.conftest import TINY

SOLUTIONS = Path(__file__).parent.parent / "notebooks" / "solutions"


def solution(name: str):
    """notebooks/solutions/<name>.py as a module (it is not an installed package)."""
    spec = importlib.util.spec_from_file_location(f"solutions_{name}", SOLUTIONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCALE, EMBEDDINGS, ROPE, ATTENTION = (solution(n) for n in ("scale", "embeddings", "rope", "attention"))
REAL_WEIGHTS = solution("real_weights")
TRAINING = solution("training")
GENERATION = solution("generation")
FULL_MODEL = solution("full_model")
ROUTING = solution("routing")
TOKENIZATION = solution("tokenization")


@functools.cache
def _tiny_model():
    from grok_mini import Grok

    # The dense dispatch: the same function, and faster to compile than the sparse one.
    return Grok(TINY, dtype=jnp.float32, rngs=nnx.Rngs(0), dispatch="dense")


def _check_decoder_layer(decoder_layer):
    """The decoder-layer checker on a tiny float32 Grok (the notebook passes its own model)."""
    return full_model.check_decoder_layer(decoder_layer, _tiny_model())


# (checker, reference solution) for every exercise in the notebooks.
CHECKS = {
    "count_params": (scale.check_param_count, SCALE.count_params),
    "kv_cache_bytes": (scale.check_kv_cache_bytes, SCALE.kv_cache_bytes),
    "rms_norm": (embeddings.check_rms_norm, EMBEDDINGS.rms_norm),
    "tied_logits": (embeddings.check_tied_logits, EMBEDDINGS.tied_logits),
    "rope_frequencies": (rope.check_rope_frequencies, ROPE.rope_frequencies),
    "apply_rope": (rope.check_rope, ROPE.apply_rope),
    "kv_head_for": (attention.check_kv_head, ATTENTION.kv_head_for),
    "attention": (attention.check_attention, ATTENTION.attention),
    "merge_pair": (tokenization.check_merge_pair, TOKENIZATION.merge_pair),
    "decode_pieces": (tokenization.check_decode_pieces, TOKENIZATION.decode_pieces),
    "top2_route": (routing.check_top2_route, ROUTING.top2_route),
    "balance_loss": (routing.check_balance_loss, ROUTING.balance_loss),
    "decoder_layer": (_check_decoder_layer, FULL_MODEL.decoder_layer),
    "normalized_entropy": (full_model.check_normalized_entropy, FULL_MODEL.normalized_entropy),
    "top_k_filter": (generation.check_top_k_filter, GENERATION.top_k_filter),
    "nucleus_filter": (generation.check_nucleus_filter, GENERATION.nucleus_filter),
    "next_token_loss": (training.check_next_token_loss, TRAINING.next_token_loss),
    "learning_rate": (training.check_learning_rate, TRAINING.learning_rate),
    "layer_order": (real_weights.check_layer_order, REAL_WEIGHTS.layer_order),
    "dequantize_blocks": (real_weights.check_dequantize_blocks, REAL_WEIGHTS.dequantize_blocks),
}


@pytest.mark.parametrize("name", CHECKS)
def test_checker_accepts_the_reference_solution(name, capsys):
    checker, reference = CHECKS[name]
    assert checker(reference) is True
    assert capsys.readouterr().out.startswith(f"✓ {name}: passed")


@pytest.mark.parametrize("name", CHECKS)
def test_checker_reports_an_untouched_stub_without_raising(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    checker, _ = CHECKS[name]
    assert checker(stub) is False
    out = capsys.readouterr().out
    # Nothing more before an attempt: no hint, no code (the stored notebook must not give the answer).
    assert out == f"· {name}: not attempted yet. Replace `raise NotImplementedError` in your function.\n"


def _untied_count(config):
    return SCALE.count_params(config) + config.vocab_size * config.emb_size


def _ffn_without_rounding(config):
    wrong_ffn = int(config.widening_factor * config.emb_size)
    return SCALE.count_params(config) + config.num_layers * config.num_experts * 3 * config.emb_size * (
        wrong_ffn - config.ffn_size)


def _mha_cache(config, tokens, batch):
    return 2 * config.num_layers * config.num_q_heads * config.key_size * 2 * tokens * batch


def _rms_plus_one(x, scale, eps=1e-5):
    return EMBEDDINGS.rms_norm(x, scale + 1.0, eps)


def _rms_without_eps(x, scale, eps=1e-5):
    return EMBEDDINGS.rms_norm(x, scale, 0.0)


def _layer_norm(x, scale, eps=1e-5):
    x32 = x.astype(jnp.float32)
    centred = x32 - x32.mean(-1, keepdims=True)
    return (centred / jnp.sqrt(jnp.mean(centred**2, -1, keepdims=True) + eps) * scale).astype(x.dtype)


def _rms_float32_out(x, scale, eps=1e-5):
    return EMBEDDINGS.rms_norm(x, scale, eps).astype(jnp.float32)


def _logits_without_multiplier(h, embedding, config):
    return jnp.einsum("btd,vd->btv", h, embedding)


def _frequencies_i_over_d(key_size, base=10_000):
    return 1.0 / base ** (np.arange(key_size // 2) / key_size)


def _interleaved(x, positions):
    return rope.interleaved_rope(x, positions)


def _rope_from_zero(x, positions):
    return ROPE.apply_rope(x, jnp.broadcast_to(jnp.arange(x.shape[1]), positions.shape))


def _modular_head(query_head, num_q_heads, num_kv_heads):
    return query_head % num_kv_heads


def _attention_uncapped(q, k, v, mask):
    return ATTENTION.attention(q, k, v, mask, cap=1e9)


def _attention_modular(q, k, v, mask):
    group = q.shape[2] // k.shape[2]
    k, v = jnp.tile(k, (1, 1, group, 1)), jnp.tile(v, (1, 1, group, 1))  # head h reads h % KV
    return ATTENTION.attention(q, k, v, mask)


def _attention_unmasked(q, k, v, mask):
    return ATTENTION.attention(q, k, v, jnp.ones_like(mask))


def _crashes(*args, **kwargs):
    return args[0].no_such_attribute


def _merge_first_occurrence(pieces, pair):
    for i in range(len(pieces) - 1):
        if (pieces[i], pieces[i + 1]) == tuple(pair):
            return pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    return pieces


def _merge_joined_string(pieces, pair):
    return " ".join(pieces).replace(" ".join(pair), "".join(pair)).split(" ")


def _decode_keeping_the_dummy_space(pieces):
    return " " + TOKENIZATION.decode_pieces(pieces)


def _decode_with_lstrip(pieces):
    return TOKENIZATION.decode_pieces(pieces).lstrip()


def _decode_bytes_as_latin1(pieces):
    text = "".join(chr(int(p[3:5], 16)) if p.startswith("<0x") else p for p in pieces).replace("▁", " ")
    return text[1:] if text.startswith(" ") else text


def _merge_returning_a_tuple(pieces, pair):
    return tuple(TOKENIZATION.merge_pair(pieces, pair))


def _decode_leaving_the_markers(pieces):
    return "".join(pieces)


def _renormalised_top2(logits):
    gates, ids = ROUTING.top2_route(logits)
    return gates / gates.sum(-1, keepdims=True), ids


def _softmax_of_top2_logits(logits):
    top, ids = jax.lax.top_k(jnp.asarray(logits), 2)
    return jax.nn.softmax(top, axis=-1), ids


def _bottom2(logits):
    ids = np.argsort(logits, axis=-1)[:, :2]
    return np.take_along_axis(jax.nn.softmax(logits, axis=-1), ids, -1), ids


def _top2_second_first(logits):
    gates, ids = ROUTING.top2_route(logits)
    return gates[:, ::-1], ids[:, ::-1]


def _balance_not_divided_by_k(logits, num_selected):
    return num_selected * ROUTING.balance_loss(logits, num_selected)


def _balance_without_e(logits, num_selected):
    return ROUTING.balance_loss(logits, num_selected) / logits.shape[-1]


def _balance_of_loads_squared(logits, num_selected):
    n, e = logits.shape
    _, chosen = jax.lax.top_k(jnp.asarray(logits), num_selected)
    f = jnp.bincount(chosen.reshape(-1), length=e) / (n * num_selected)
    return e * jnp.sum(f * f)


def _layer_without_post_norms(layer, h, positions, key_mask):
    attended, _ = layer.multi_head_attention(layer.rms_norm(h), positions, key_mask)
    h = h + attended
    return h + layer.moe(layer.rms_norm_2(h))


def _layer_normalising_the_sum(layer, h, positions, key_mask):
    attended, _ = layer.multi_head_attention(layer.rms_norm(h), positions, key_mask)
    h = layer.rms_norm_1(h + attended)
    return layer.rms_norm_3(h + layer.moe(layer.rms_norm_2(h)))


def _entropy_in_nats(probs):
    return jax.scipy.special.entr(probs).sum(-1)


def _entropy_with_nan(probs):
    return -(probs * jnp.log(probs)).sum(-1) / jnp.log(probs.shape[-1])


def _top_k_exactly_k(logits, k):
    keep = jnp.zeros(logits.shape, bool).at[jnp.argsort(-logits)[:k]].set(True)
    return jnp.where(keep, logits, -jnp.inf)


def _nucleus_without_the_crossing_token(logits, top_p):
    probs = jax.nn.softmax(logits)
    order = jnp.argsort(-probs)
    keep = jnp.zeros(logits.shape, bool).at[order].set(jnp.cumsum(probs[order]) <= top_p)
    return jnp.where(keep, logits, -jnp.inf)


def _nucleus_returning_probabilities(logits, top_p):
    return jax.nn.softmax(GENERATION.nucleus_filter(logits, top_p))


def _nucleus_without_ties(logits, top_p):
    probs = jax.nn.softmax(logits)
    order = jnp.argsort(-probs)
    before = jnp.cumsum(probs[order]) - probs[order]
    keep = jnp.zeros(logits.shape, bool).at[order].set(before < top_p)
    return jnp.where(keep, logits, -jnp.inf)


def _summed_loss(logits, targets):
    return TRAINING.next_token_loss(logits, targets) * targets.size


def _loss_in_bits(logits, targets):
    return TRAINING.next_token_loss(logits, targets) / np.log(2)


def _loss_with_a_naive_softmax(logits, targets):
    probs = jnp.exp(logits) / jnp.exp(logits).sum(-1, keepdims=True)  # overflows for large logits
    return -jnp.log(jnp.take_along_axis(probs, targets[..., None], -1)).mean()


def _linear_decay(step, peak, warmup, total, final_fraction):
    if step < warmup:
        return peak * step / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return peak * (1 - (1 - final_fraction) * progress)


def _decay_to_zero(step, peak, warmup, total, final_fraction):
    return TRAINING.learning_rate(step, peak, warmup, total, 0.0)


def _numeric_layer_order(num_layers):
    return list(range(num_layers))


def _interleaved_blocks(weight, scales):
    blocks = scales.shape[0]
    return weight.astype(np.float32) * scales[np.arange(weight.shape[0]) % blocks]


def _first_block_only(weight, scales):
    return weight.astype(np.float32) * scales[0]


# (exercise, wrong answer, words the message must contain)
WRONG = [
    ("count_params", _untied_count, "counted the embedding twice"),
    ("count_params", _ffn_without_rounding, "ffn_size"),
    ("count_params", lambda config: config.num_params + 0.5, "whole number"),
    ("kv_cache_bytes", _mha_cache, "num_kv_heads"),
    ("rms_norm", _rms_plus_one, "as is"),
    ("rms_norm", _rms_without_eps, "eps inside the square root"),
    ("rms_norm", _layer_norm, "LayerNorm"),
    ("rms_norm", _rms_float32_out, "dtype"),
    ("tied_logits", _logits_without_multiplier, "output_multiplier_scale"),
    ("rope_frequencies", _frequencies_i_over_d, "2i/D"),
    ("apply_rope", _interleaved, "interleaved convention"),
    ("apply_rope", _rope_from_zero, "positions you are given"),
    ("kv_head_for", _modular_head, "contiguously"),
    ("attention", _attention_uncapped, "soft cap"),
    ("attention", _attention_modular, "h // G"),
    ("attention", _attention_unmasked, "zero weight"),
    ("attention", _crashes, "raised AttributeError"),
    ("merge_pair", _merge_first_occurrence, "every occurrence"),
    ("merge_pair", _merge_joined_string, "whole pieces"),
    ("merge_pair", _merge_returning_a_tuple, "list of strings"),
    ("decode_pieces", _decode_keeping_the_dummy_space, "add_dummy_prefix"),
    ("decode_pieces", _decode_with_lstrip, "only the one space"),
    ("decode_pieces", _decode_bytes_as_latin1, "UTF-8 bytes"),
    ("decode_pieces", _decode_leaving_the_markers, "U\\+2581"),
    ("top2_route", _renormalised_top2, "renormalised"),
    ("top2_route", _softmax_of_top2_logits, "renormalised"),
    ("top2_route", _bottom2, "smallest"),
    ("top2_route", _top2_second_first, "wrong order"),
    ("balance_loss", _balance_not_divided_by_k, "N·k"),
    ("balance_loss", _balance_without_e, "number of experts E"),
    ("balance_loss", _balance_of_loads_squared, "mean router \\*probability\\*"),
    ("decoder_layer", _layer_without_post_norms, "sandwich"),
    ("decoder_layer", _layer_normalising_the_sum, "post-LN"),
    ("normalized_entropy", _entropy_in_nats, "divide by log E"),
    ("normalized_entropy", _entropy_with_nan, "0 · log 0"),
    ("top_k_filter", _top_k_exactly_k, "k-th largest is kept too"),
    ("nucleus_filter", _nucleus_without_the_crossing_token, "crosses top_p"),
    ("nucleus_filter", _nucleus_returning_probabilities, "looks like probabilities"),
    ("nucleus_filter", _nucleus_without_ties, "tied with the last kept"),
    ("next_token_loss", _summed_loss, "do not sum"),
    ("next_token_loss", _loss_in_bits, "natural logarithm"),
    ("next_token_loss", _loss_with_a_naive_softmax, "numerically stable"),
    ("learning_rate", _linear_decay, "cosine, not a straight line"),
    ("learning_rate", _decay_to_zero, "not to 0"),
    ("layer_order", _numeric_layer_order, "sorts module \\*names\\* as strings"),
    ("dequantize_blocks", _interleaved_blocks, "blocks are contiguous"),
    ("dequantize_blocks", _first_block_only, "not scales\\[0\\]"),
]


@pytest.mark.parametrize(("name", "wrong", "words"), WRONG, ids=[f"{n}-{w.__name__}" for n, w, _ in WRONG])
def test_checker_rejects_a_plausible_mistake_with_a_hint(name, wrong, words):
    checker, _ = CHECKS[name]
    with pytest.raises(ExerciseFailed, match=words):
        checker(wrong)


def test_reference_attention_matches_the_package_attention():
    """The checker's plain attention is the model's: feed it the module's own q, k, v (after RoPE)."""
    module = MultiHeadAttention(TINY, dtype=jnp.float32, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, TINY.emb_size)) * 3
    positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
    key_mask = jnp.array([[True] * 6, [True] * 4 + [False] * 2])
    d = TINY.key_size

    @nnx.jit
    def module_and_inputs(module, x):  # compiled: eager op-by-op execution is slow on CPU
        out, _ = module(x, positions, key_mask)
        q = rotary_embedding(module.query(x).reshape(2, 6, TINY.num_q_heads, d), positions)
        k = rotary_embedding(module.key(x).reshape(2, 6, TINY.num_kv_heads, d), positions)
        return out, q, k, module.value(x).reshape(2, 6, TINY.num_kv_heads, d)

    ours, q, k, v = module_and_inputs(module, x)
    mask = np.tril(np.ones((6, 6), bool))[None] & np.asarray(key_mask)[:, None, :]
    plain = attention.reference_attention(q, k, v, mask).reshape(2, 6, -1)  # [B, T, H·D]
    expected = plain @ np.asarray(module.linear.kernel(), np.float64)
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-4, atol=1e-5)


def test_hints_come_only_after_wrong_attempts_and_grow(monkeypatch):
    from grok_mini.teach import exercises

    monkeypatch.setattr(exercises, "_attempts", {})
    checker, _ = CHECKS["rms_norm"]
    messages = []
    for _ in range(2):
        with pytest.raises(ExerciseFailed) as error:
            checker(_rms_plus_one)
        messages.append(str(error.value))
    assert "Hint (after" not in messages[0] and "a second wrong attempt adds a general hint" in messages[0]
    assert "Hint (after 2 wrong attempts)" in messages[1]


def test_the_package_function_itself_is_refused_kindly(capsys):
    import functools

    from grok_mini import moe
    from grok_mini.layers import rotary_embedding

    assert CHECKS["apply_rope"][0](rotary_embedding) is False
    assert "package's own `grok_mini.layers.rotary_embedding`" in capsys.readouterr().out
    assert CHECKS["top2_route"][0](functools.partial(moe.route, num_selected=2)) is False
    assert "package's own `grok_mini.moe.route`" in capsys.readouterr().out


def test_verdicts_reach_the_gradebook(tmp_path, monkeypatch):
    import json

    from grok_mini.teach import exercises

    gradebook = tmp_path / "gradebook.jsonl"
    monkeypatch.setenv(exercises.GRADEBOOK_VARIABLE, str(gradebook))
    monkeypatch.setattr(exercises, "_attempts", {})
    CHECKS["rms_norm"][0](CHECKS["rms_norm"][1])
    with pytest.raises(ExerciseFailed):
        CHECKS["rms_norm"][0](_rms_plus_one)
    verdicts = [json.loads(line) for line in gradebook.read_text().splitlines()]
    assert [(v["exercise"], v["status"]) for v in verdicts] == [("rms_norm", "passed"), ("rms_norm", "failed")]
    assert verdicts[1]["mistake"]  # the recognised mistake is named
