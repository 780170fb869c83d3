"""grok_mini.teach.explorer: the routing explorer's data functions, without a browser."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import grok_mini
from grok_mini.teach import explorer, trained_toy

TEXT = "The king said to the queen that the night was long"


@pytest.fixture(scope="module")
def toy():
    return trained_toy()


@pytest.fixture(scope="module")
def rec(toy):
    return explorer.record(*toy, TEXT)


def test_record_shapes(toy, rec):
    model, tokenizer = toy
    config = model.config
    t = len(tokenizer.encode(TEXT))
    assert len(rec.pieces) == t and rec.pieces[0].startswith("▁")
    assert rec.router_logits.shape == (config.num_layers, t, config.num_experts)
    assert rec.attention.shape == (config.num_layers, config.num_q_heads, t, t)
    assert (rec.num_selected, rec.router, rec.renormalize) == (2, "softmax_topk", False)


def test_routing_table_grok1_raw_top2_gates(toy, rec):
    rows = explorer.routing_table(rec)
    assert len(rows) == len(rec.pieces) * toy[0].config.num_layers
    probs = np.exp(rec.router_logits) / np.exp(rec.router_logits).sum(-1, keepdims=True)  # [L, T, E]
    for row in rows:
        experts, gates = row["experts"], row["gates"]
        assert len(experts) == 2 and len(set(experts)) == 2
        assert all(0 <= e < 8 for e in experts)
        assert gates[0] >= gates[1] > 0
        assert sum(gates) < 1  # Grok-1: the softmax probabilities as they are, not renormalised
        p = probs[row["layer"], row["position"]]
        np.testing.assert_allclose(gates, p[experts], rtol=1e-5)  # the gates are those experts' probabilities
        assert p[experts[1]] >= np.delete(p, experts).max()  # and they are the two largest
    # A trained router is not uniform: some tokens give their first expert more than half.
    assert max(row["gates"][0] for row in rows) > 0.5


def test_routing_table_follows_the_models_variant(rec):
    renormalized = dataclasses.replace(rec, renormalize=True)
    for row, raw in zip(explorer.routing_table(renormalized), explorer.routing_table(rec), strict=True):
        assert row["experts"] == raw["experts"]  # the same choice, other gates
        assert sum(row["gates"]) == pytest.approx(1.0, abs=1e-5)


def test_expert_load_sums_to_one_and_counts_the_choices(toy, rec):
    load = explorer.expert_load(rec)  # [L, E]
    assert load.shape == (4, 8)
    np.testing.assert_allclose(load.sum(-1), 1.0, atol=1e-12)
    assert np.all(load >= 0) and np.all(load <= 0.5)  # top-2: one expert is at most half the choices
    rows = explorer.routing_table(rec)
    layer0 = [e for row in rows if row["layer"] == 0 for e in row["experts"]]
    np.testing.assert_allclose(load[0], np.bincount(layer0, minlength=8) / len(layer0))


def test_head_attention_is_causal_and_normalised(toy, rec):
    model, _ = toy
    t = len(rec.pieces)
    for layer, head in ((0, 0), (3, 3), (1, 2)):
        attention = explorer.head_attention(rec, layer, head)  # [T, T]
        assert attention.shape == (t, t)
        np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)  # each query's weights over its keys
        assert np.all(np.triu(attention, 1) == 0)  # nothing on later tokens
        assert attention[0, 0] == pytest.approx(1.0, abs=1e-6)  # the first token sees only itself
    # Heads differ: query heads 0 and 3 read different key/value heads (GQA groups of 2).
    assert not np.allclose(explorer.head_attention(rec, 1, 0), explorer.head_attention(rec, 1, 3))


def test_the_untrained_toy_routes_otherwise(toy, rec):
    _, tokenizer = toy
    untrained = grok_mini.Grok(grok_mini.preset("toy"), dtype=jnp.float32, rngs=nnx.Rngs(0))
    other = explorer.record(untrained, tokenizer, TEXT)
    assert other.pieces == rec.pieces
    trained = [row["experts"] for row in explorer.routing_table(rec)]
    random = [row["experts"] for row in explorer.routing_table(other)]
    assert sum(a != b for a, b in zip(trained, random, strict=True)) > len(trained) // 2
    assert all(sum(row["gates"]) < 1 for row in explorer.routing_table(other))


def test_static_figure_states_the_selection(rec):
    figure = explorer.static_figure(rec, 1, 2, name="trained toy")
    assert len(figure.axes) >= 3
    title = figure.get_suptitle()
    assert title.startswith("trained toy: in layer 1") and "head 2 gives the previous token" in title
    previous = np.diagonal(explorer.head_attention(rec, 1, 2), -1).mean()
    assert f"{previous:.0%} of its attention" in title


def test_empty_text_is_refused(toy):
    with pytest.raises(ValueError, match="no tokens"):
        explorer.record(*toy, "")


def test_show_without_a_frontend_displays_the_static_figure(toy, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj) or _Handle(shown))
    controls = explorer.show(TEXT, {"trained toy": toy}, layer=1, head=2)
    figures = [obj for obj in shown if hasattr(obj, "get_suptitle")]
    assert len(figures) == 1 and "layer 1" in figures[0].get_suptitle()
    # The controls redraw the figure in place: another head updates the same display.
    controls.children[1].children[2].value = 3
    assert "head 3" in shown[-1].get_suptitle()


class _Handle:
    def __init__(self, shown):
        self.shown = shown

    def update(self, obj):
        self.shown.append(obj)
