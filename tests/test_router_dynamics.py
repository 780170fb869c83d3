"""Notebook 13 (router dynamics): its gradient helper against a float64 finite-difference reference, its
two prediction checkers, and the stored training runs against the script that makes them."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import grok_mini
from grok_mini.config import Variant
from grok_mini.teach import router_dynamics as rd
from grok_mini.teach.exercises import ExerciseFailed
from grok_mini.teach.exercises import router_dynamics as checks

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "notebooks" / "data" / "13_router_dynamics"


def _script():
    spec = importlib.util.spec_from_file_location("make_router_runs", ROOT / "scripts" / "make_router_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _layer(variant: Variant | None = None, seed: int = 0):
    config = dataclasses.replace(grok_mini.preset("toy"), variant=variant or Variant())
    return grok_mini.Grok(config, dtype=jnp.float32, rngs=nnx.Rngs(seed)).decoder_layers[0]


def _inputs(seed: int, n: int = 32, d: int = 128):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((n, d)).astype(np.float32)


# ---- the gradient helper -------------------------------------------------------------------------

def _reference_loss(layer, h, projection, logits, chosen):
    """The MoE block's projected output in float64 numpy, the top-2 experts held fixed (as top_k's derivative does)."""
    def rms_norm(x, norm):
        return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + norm.eps) * np.asarray(norm.scale[...], np.float64)

    variant = layer.config.variant
    experts = layer.moe.experts
    gate_w, value_w, down_w = (np.asarray(m.kernel(), np.float64)
                               for m in (experts.linear, experts.linear_v, experts.linear_1))
    x = rms_norm(h, layer.rms_norm_2)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    gates = np.take_along_axis(probs, chosen, -1)
    if variant.renormalize:
        gates = gates / gates.sum(-1, keepdims=True)
    out = np.zeros_like(h)
    for slot in range(chosen.shape[-1]):
        e = chosen[:, slot]
        a = np.einsum("nd,ndf->nf", x, gate_w[e])
        gelu = 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
        hidden = gelu * np.einsum("nd,ndf->nf", x, value_w[e])
        out += gates[:, slot, None] * np.einsum("nf,nfd->nd", hidden, down_w[e])
    if "rms_norm_3" not in variant.drop_norms:
        out = rms_norm(out, layer.rms_norm_3)
    return float(np.sum((h + out) * projection) / h.shape[0])


def _finite_difference(layer, h, projection, step=1e-6):
    h64, p64 = h.astype(np.float64), projection.astype(np.float64)
    logits = np.asarray(layer.moe.router(layer.rms_norm_2(jnp.asarray(h))), np.float64)
    chosen = np.argsort(-logits, -1, kind="stable")[:, :layer.config.num_selected_experts]
    grads = np.zeros_like(logits)
    for index in np.ndindex(logits.shape):
        up, down = logits.copy(), logits.copy()
        up[index] += step
        down[index] -= step
        grads[index] = (_reference_loss(layer, h64, p64, up, chosen)
                        - _reference_loss(layer, h64, p64, down, chosen)) / (2 * step)
    return grads, logits


@pytest.mark.parametrize("variant", [Variant(), Variant(drop_norms=("rms_norm_3",)),
                                     Variant(drop_norms=("rms_norm_3",), renormalize=True)],
                         ids=["grok-1", "no rms_norm_3", "renormalised, no rms_norm_3"])
def test_logit_gradients_match_float64_finite_differences(variant):
    layer = _layer(variant)
    h, projection = _inputs(3, n=12)
    got, logits = rd.logit_gradients(layer, h, projection)
    want, want_logits = _finite_difference(layer, h, projection)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=2e-4 * scale)  # every entry, to float32 accuracy
    split, reference = rd.split_by_choice(got, logits), rd.split_by_choice(want, want_logits)
    assert split["chosen"] == pytest.approx(reference["chosen"], rel=1e-3)
    if variant.drop_norms and not variant.renormalize:  # a real gradient on the unchosen logits
        assert split["unchosen"] == pytest.approx(reference["unchosen"], rel=1e-3)
        assert split["ratio"] > 0.05
    elif not variant.drop_norms:  # only rms_norm_3's epsilon leaves a little, which float32 still resolves
        assert split["unchosen"] == pytest.approx(reference["unchosen"], rel=0.05)
        assert 1e-6 < split["ratio"] < 1e-3
    else:  # renormalised gates: the unchosen logits do not reach the output at all
        assert reference["unchosen"] < 1e-9 and split["ratio"] < 1e-6


def test_split_by_choice_by_hand():
    logits = np.array([[3.0, 1.0, 2.0, 0.0], [0.0, 5.0, -1.0, 4.0]])
    grads = np.array([[1.0, -0.5, 3.0, 0.25], [2.0, -4.0, 1.0, 6.0]])
    split = rd.split_by_choice(grads, logits, 2)  # chosen: {0, 2} and {1, 3}
    assert split["chosen"] == pytest.approx((1 + 3 + 4 + 6) / 4)
    assert split["unchosen"] == pytest.approx((0.5 + 0.25 + 2 + 1) / 4)
    assert split["ratio"] == pytest.approx(split["unchosen"] / split["chosen"])


def test_moe_block_is_the_layers_own_path():
    layer = _layer()
    h, _ = _inputs(0)
    h = jnp.asarray(h)
    x = layer.rms_norm_2(h)
    own = h + layer.rms_norm_3(layer.moe(x[None]))[0]
    np.testing.assert_allclose(rd.moe_block(layer, h, layer.moe.router(x)), own, atol=1e-5)


# ---- the checkers ----------------------------------------------------------------------------------

def _assert_rejected(checker, value, words):
    with pytest.raises(ExerciseFailed) as failure:
        checker(value)
    assert words in str(failure.value), str(failure.value)


def test_renormalised_gradient_checker(capsys):
    inputs = [(seed, *_inputs(seed)) for seed in (0, 1)]
    truth = float(np.mean(checks.renormalised_ratios(inputs)))
    assert truth < 1e-6
    assert checks.check_renormalised_gradient(None, inputs) is False
    assert "not attempted yet" in capsys.readouterr().out
    assert checks.check_renormalised_gradient(0.0, inputs) is True
    assert "passed" in capsys.readouterr().out
    without_norm = float(np.mean(checks.renormalised_ratios(inputs, renormalize=False)))
    assert without_norm > 0.05
    check = lambda value: checks.check_renormalised_gradient(value, inputs)  # noqa: E731
    _assert_rejected(check, without_norm, "Grok's raw gates")
    _assert_rejected(check, 1.0, "the same way")
    _assert_rejected(check, 0.5, "not by half")
    _assert_rejected(check, 0.05, "too large")


def _stored(arm):
    index = json.loads((DATA / "runs.json").read_text())
    return [json.loads((DATA / entry["file"]).read_text())["history"] for entry in index["runs"] if entry["arm"] == arm]


def test_favoured_share_checker(capsys):
    histories = _stored("favoured-none")
    truth = checks.favoured_share(histories)
    assert 0.3 < truth < 0.5  # the stored runs: it stays far above 1/8
    assert checks.check_favoured_share(None, histories) is False
    assert "not attempted yet" in capsys.readouterr().out
    assert checks.check_favoured_share(truth, histories) is True
    assert checks.check_favoured_share(0.5, histories) is True  # "it stays where it started" is the idea
    check = lambda value: checks.check_favoured_share(value, histories)  # noqa: E731
    _assert_rejected(check, 0.125, "the balance loss takes it")
    _assert_rejected(check, 0.25, "half-way back")
    _assert_rejected(check, 1.0, "cannot exceed 1/2")
    _assert_rejected(check, "a lot", "should be a number")


def test_hints_are_three_sentences_of_words():
    assert set(checks.HINTS) == {"renormalised_gradient", "favoured_share"}
    for hints in checks.HINTS.values():
        assert len(hints) == 3
        for hint in hints:
            assert not any(token in hint for token in ("`", "(", "=", "np.", "jnp", "[", "def ")), hint


# ---- the stored runs ---------------------------------------------------------------------------------

def test_stored_runs_are_what_the_script_writes():
    script = _script()
    index = json.loads((DATA / "runs.json").read_text())
    assert list(index["arms"]) == list(script.ARMS) and index["seeds"] == list(script.SEEDS)
    expected = {script.run_file(DATA, arm, seed).name for arm in script.ARMS for seed in script.SEEDS}
    assert {entry["file"] for entry in index["runs"]} == expected
    assert {p.name for p in DATA.iterdir()} == expected | {"runs.json"}
    assert sum(p.stat().st_size for p in DATA.iterdir()) < 1_000_000
    toy = grok_mini.preset("toy").to_dict()
    for entry in index["runs"]:
        record = json.loads((DATA / entry["file"]).read_text())
        what, balance_coef, z_coef, favoured = script.ARMS[entry["arm"]]
        assert (record["arm"], record["seed"], record["what"]) == (entry["arm"], entry["seed"], what)
        assert record["model"] == toy
        assert record["train"] == dataclasses.asdict(dataclasses.replace(
            script.TRAINING, balance_coef=balance_coef, z_coef=z_coef, seed=entry["seed"]))
        assert record["favoured"] == (dict(expert=script.FAVOURED_EXPERT, strength=script.FAVOUR_STRENGTH)
                                      if favoured else None)
        history = record["history"]
        load = np.asarray(history["expert_load"])
        assert history["step"] == list(range(script.TRAINING.steps))
        assert load.shape == (script.TRAINING.steps, toy["num_layers"], toy["num_experts"])
        np.testing.assert_allclose(load.sum(-1), 1.0, atol=1e-3)
        assert all(len(history[key]) == script.TRAINING.steps for key in ("loss", "ce", "balance", "z"))
        if favoured:  # expert 0 starts in nearly every token's top 2
            assert load[0, :, 0].min() > 0.4


def test_the_script_reproduces_the_first_steps():
    """Three steps of one arm now equal the stored run's first three (the warm-up, hence the learning rate
    of those steps, does not depend on the run's length)."""
    script = _script()
    tokens = script.corpus_tokens(grok_mini.preset("toy").vocab_size)
    record = script.train_arm("favoured-balance", 0, tokens,
                              training=dataclasses.replace(script.TRAINING, steps=3, eval_every=3))
    stored = json.loads(script.run_file(DATA, "favoured-balance", 0).read_text())["history"]
    for key in ("loss", "ce", "balance", "z"):
        np.testing.assert_allclose(record["history"][key], stored[key][:3], rtol=1e-3)
    np.testing.assert_allclose(record["history"]["expert_load"], stored["expert_load"][:3], atol=3e-3)
    assert record["history"]["heldout_loss"][0] == pytest.approx(stored["heldout_loss"][0], rel=1e-3)
