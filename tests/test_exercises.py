"""Every exercise checker accepts the reference solution, reports an untouched stub, and rejects
plausible wrong answers with a hint that names the mistake."""

from __future__ import annotations

import functools
import re

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
from teacher.mistakes import MISTAKES, NOTHING_TO_REFUSE, USES_PACKAGE, hard_coded
from teacher.solutions import attention as attention_solutions
from teacher.solutions import embeddings as embeddings_solutions
from teacher.solutions import full_model as full_model_solutions
from teacher.solutions import generation as generation_solutions
from teacher.solutions import real_weights as real_weights_solutions
from teacher.solutions import rope as rope_solutions
from teacher.solutions import routing as routing_solutions
from teacher.solutions import scale as scale_solutions
from teacher.solutions import tokenization as tokenization_solutions
from teacher.solutions import training as training_solutions
from tests.conftest import TINY

SCALE, EMBEDDINGS, ROPE, ATTENTION = scale_solutions, embeddings_solutions, rope_solutions, attention_solutions
REAL_WEIGHTS, TRAINING, GENERATION = real_weights_solutions, training_solutions, generation_solutions
FULL_MODEL, ROUTING, TOKENIZATION = full_model_solutions, routing_solutions, tokenization_solutions


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


MODULES = (attention, embeddings, full_model, generation, real_weights, rope, routing, scale, tokenization, training)


def _module(name):
    """The checker module of an exercise."""
    [module] = [m for m in MODULES if name in m.HINTS]
    return module


@pytest.fixture(autouse=True)
def _first_attempts(monkeypatch):
    """Each test starts as a fresh kernel does: no wrong attempts counted yet."""
    from grok_mini.teach import exercises

    monkeypatch.setattr(exercises, "_attempts", {})


WRONG = [(name, words, answer) for name, listed in MISTAKES.items() for words, answer in listed]


def test_every_exercise_lists_at_least_three_plausible_mistakes():
    assert set(MISTAKES) == set(CHECKS)
    assert {name: len(listed) for name, listed in MISTAKES.items() if len(listed) < 3} == {}


@pytest.mark.parametrize(("name", "words", "wrong"), WRONG, ids=[f"{n}-{w.__name__}" for n, _, w in WRONG])
def test_checker_rejects_a_plausible_mistake_and_names_it(name, words, wrong):
    checker, _ = CHECKS[name]
    with pytest.raises(ExerciseFailed, match=words) as error:
        checker(wrong)
    assert "Hint" not in str(error.value)  # a first attempt: the words are the diagnosis, not a hint


@pytest.mark.parametrize("name", CHECKS)
def test_a_hard_coded_answer_fails_on_other_inputs(name):
    checker, reference = CHECKS[name]
    with pytest.raises(ExerciseFailed):
        checker(hard_coded(reference))


@pytest.mark.parametrize("name", CHECKS)
def test_an_answer_calling_the_package_function_is_refused(name, capsys):
    checker, _ = CHECKS[name]
    module = _module(name)
    if name in NOTHING_TO_REFUSE:
        assert module.REFUSE[name] == () and name not in USES_PACKAGE
        return
    assert module.REFUSE[name]
    assert checker(USES_PACKAGE[name]) is False
    assert capsys.readouterr().out.startswith(f"✗ {name}: your answer uses")


def test_the_package_function_itself_and_its_aliases_are_refused(capsys):
    import grok_mini
    from grok_mini import moe

    assert CHECKS["apply_rope"][0](rotary_embedding) is False
    assert "`grok_mini.layers.rotary_embedding`" in capsys.readouterr().out
    assert CHECKS["top2_route"][0](functools.partial(moe.route, num_selected=2)) is False
    assert "`grok_mini.moe.route`" in capsys.readouterr().out

    def via_the_top_level(x, positions):  # the re-exported name, inside a function of one's own
        return grok_mini.layers.rotary_embedding(x, positions)

    assert CHECKS["apply_rope"][0](via_the_top_level) is False


def _looks_like_code(text: str) -> bool:
    """Calls, assignments, indexing, operators and library names: what a hint must not contain."""
    return bool(re.search(r"\w\(|\w\[|\bnp\.|\bjnp\.|\bjax\.|\*\*|//|==|>=|<=| = |lambda|\.astype|\.sum|\.mean",
                          text))


def _all_hints():
    from grok_mini.teach.exercises import experts, router_dynamics, why_moe

    for module in MODULES + (experts, router_dynamics, why_moe):  # with the prediction-only notebooks' checkers
        yield from module.HINTS.items()


def test_hints_are_words_not_code_and_there_are_several():
    hints = dict(_all_hints())
    assert set(CHECKS) <= set(hints)
    assert {n: len(h) for n, h in hints.items() if len(h) < 3} == {}
    assert [(n, hint) for n, h in hints.items() for hint in h if _looks_like_code(hint)] == []
    assert _looks_like_code("probs = jax.nn.softmax(logits)") and _looks_like_code("x / sqrt(mean(x**2))")


def test_hints_come_one_more_with_each_wrong_attempt(monkeypatch):
    from grok_mini.teach import exercises

    monkeypatch.setattr(exercises, "_attempts", {})
    checker, _ = CHECKS["rms_norm"]
    hints = embeddings.HINTS["rms_norm"]
    messages = []
    for _ in range(4):
        with pytest.raises(ExerciseFailed) as error:
            checker(MISTAKES["rms_norm"][0][1])
        messages.append(str(error.value))
    assert "Hint" not in messages[0] and "each further wrong attempt adds a hint" in messages[0]
    for attempt, message in enumerate(messages[1:], start=2):
        shown = [h for h in hints if h in message]
        assert shown == list(hints[:attempt - 1]), attempt
    assert "adds a hint" not in messages[3]  # all three given


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


def test_verdicts_reach_the_gradebook(tmp_path, monkeypatch):
    import json

    from grok_mini.teach import exercises

    gradebook = tmp_path / "gradebook.jsonl"
    monkeypatch.setenv(exercises.GRADEBOOK_VARIABLE, str(gradebook))
    monkeypatch.setattr(exercises, "_attempts", {})
    CHECKS["rms_norm"][0](CHECKS["rms_norm"][1])
    with pytest.raises(ExerciseFailed):
        CHECKS["rms_norm"][0](MISTAKES["rms_norm"][0][1])
    verdicts = [json.loads(line) for line in gradebook.read_text().splitlines()]
    assert [(v["exercise"], v["status"]) for v in verdicts] == [("rms_norm", "passed"), ("rms_norm", "failed")]
    assert verdicts[1]["mistake"]  # the recognised mistake is named


# ---- the prediction exercises: the truth, computed here independently, passes; each listed wrong value is
# rejected and named; the untouched stub (None) is "not attempted" ---------------------------------------------


def _buggy_mask(tokens, pad_token, *, fixed_line: int | None = None):
    """Notebook 04's buggy_attention_mask, with one line (by its number) replaced by the right rule."""
    length = tokens.shape[-1]
    query, key = jnp.arange(length)[:, None], jnp.arange(length)[None, :]
    causal = key <= query if fixed_line == 4 else key < query
    return causal[None] & (tokens != pad_token)[:, None, :]


def _prediction_cases():
    from grok_mini import moe
    from grok_mini.config import preset
    from grok_mini.layers import attention_mask

    grok = preset("grok-1")
    d, f, experts = grok.emb_size, grok.ffn_size, grok.num_layers * grok.num_experts * 3 * grok.emb_size * grok.ffn_size
    assert experts == grok.num_layers * grok.num_experts * 3 * d * f
    active = grok.num_params - experts * 6 // 8
    tokens = jnp.array([[17, 42, 7, 99, 0, 0]])
    positions = jnp.arange(6)[None]
    right = attention_mask(positions, positions, tokens != 0)
    # The bug is the line whose fix gives the package's mask, and no other line is involved.
    assert not np.array_equal(_buggy_mask(tokens, 0), right)
    assert np.array_equal(_buggy_mask(tokens, 0, fixed_line=4), right)
    layer = _tiny_model().decoder_layers[0]
    x = jax.random.normal(jax.random.key(3), (64, TINY.emb_size))
    gates, ids = moe.route(layer.moe.router(x), 2)
    out = np.asarray(moe.dense_moe(layer.moe.experts, x, moe.gate_matrix(gates, ids, TINY.num_experts)), np.float64)
    factor = 1 / np.asarray(gates, np.float64).sum(-1, keepdims=True)  # renormalising: × 1 / (g1 + g2) per token
    change = np.linalg.norm((factor - 1) * out) / np.linalg.norm(out)
    first = next(n for n in range(1, 100) if [str(i) for i in range(n)] != sorted(str(i) for i in range(n)))
    return {
        "active_expert_share": (scale.check_active_expert_share, (), experts / 4 / active),
        "buggy_line": (attention.check_buggy_line, (), 4),
        "renormalised_change": (routing.check_renormalised_change, (layer, x), change),
        "first_misordered": (real_weights.check_first_misordered, (), first),
    }


def test_prediction_checkers_accept_the_truth_and_name_each_listed_wrong_value(capsys, monkeypatch):
    from grok_mini.teach import exercises
    from teacher.mistakes import WRONG_PREDICTIONS

    for name, (checker, extra, truth) in _prediction_cases().items():
        assert checker(None, *extra) is False
        assert "not attempted yet" in capsys.readouterr().out
        assert checker(truth, *extra) is True, name
        assert capsys.readouterr().out.startswith(f"✓ {name}: passed")
        assert len(WRONG_PREDICTIONS[name]) >= 3
        for words, value in WRONG_PREDICTIONS[name]:
            monkeypatch.setattr(exercises, "_attempts", {})
            with pytest.raises(ExerciseFailed, match=words):
                checker(eval(value), *extra)  # the teacher's list holds values as expressions
