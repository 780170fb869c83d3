"""grok_mini.teach.lab (sweep numbers, prediction checks) and grok_mini.teach.explorer (routing data)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path

import numpy as np
import pytest

from grok_mini.teach import explorer, lab, trained_toy

SWEEP = Path(__file__).resolve().parents[1] / "notebooks" / "data" / "lab_sweep"
TEXT = "The king said to the queen that the night was long"


@pytest.fixture(scope="module")
def toy():
    return trained_toy()


def test_seed_band_brackets_the_mean():
    band = lab.heldout_band(SWEEP)
    assert len(band) == 8
    for b in band.values():
        assert b["seeds"] == 2
        assert np.all(b["min"] <= b["mean"] + 1e-9) and np.all(b["mean"] <= b["max"] + 1e-9)
        assert b["step"][0] == 0 and b["step"][-1] == 100


def test_top1_is_worse_than_grok1_in_the_stored_sweep():
    means = {row["experiment"]: row["mean"] for row in lab.final_table(SWEEP)}
    assert means["top-1"] > means["grok-1"] + 0.2
    assert max(means, key=means.get) == "top-1"
    dense = next(row for row in lab.final_table(SWEEP) if row["experiment"] == "dense")
    assert dense["active_params"] == dense["total_params"]


def test_imbalance_between_even_and_one_expert():
    data = lab.load_imbalance(SWEEP)
    assert "dense" not in data and "grok-1" in data
    for steps, value in data.values():
        assert len(steps) == len(value) == 100
        assert np.all(value >= 1 / 8 - 1e-6) and np.all(value <= 1)
    assert data["no balance loss"][1][-1] > data["grok-1"][1][-1]


def test_plots_are_figures_with_findings():
    for plot in (lab.plot_heldout, lab.plot_cost, lab.plot_imbalance):
        fig = plot(SWEEP)
        title = fig.get_suptitle() or fig.axes[0].get_title()
        assert title and fig.axes


def test_checker_not_attempted_gives_nothing_away(capsys):
    assert lab.check_ranking(None, SWEEP) is False
    assert lab.check_gap(None, SWEEP) is False
    out = capsys.readouterr().out
    assert out.count("not attempted yet") == 2
    for answer in ("top-1", "0.18", "0.2", "5.3"):
        assert answer not in out


def test_checker_wrong_explains_and_right_passes(capsys):
    assert lab.check_ranking("MQA", SWEEP) is False
    out = capsys.readouterr().out
    assert "✗" in out and "top-1" in out and "half" in out
    assert lab.check_ranking("nonsense", SWEEP) is False
    assert "not an experiment" in capsys.readouterr().out
    assert lab.check_ranking("top-1", SWEEP) is True
    assert "✓" in capsys.readouterr().out
    assert lab.check_gap(1.0, SWEEP) is False
    out = capsys.readouterr().out
    assert "✗" in out and "seed" in out
    assert lab.check_gap(0.18, SWEEP) is True
    assert "passed" in capsys.readouterr().out


def test_routing_table_grok1_gates(toy):
    model, tokenizer = toy
    rows = explorer.routing_table(model, tokenizer, TEXT)
    layers = len(model.decoder_layers)
    assert len(rows) % layers == 0 and len(rows) // layers == len(tokenizer.encode(TEXT))
    for row in rows:
        assert len(row["experts"]) == 2 and len(set(row["experts"])) == 2
        assert all(0 <= e < model.config.num_experts for e in row["experts"])
        assert row["gates"][0] >= row["gates"][1] > 0
        assert sum(row["gates"]) < 1  # Grok-1: raw softmax probabilities, not renormalised


def test_expert_load_sums_to_one(toy):
    load = explorer.expert_load(*toy, TEXT)
    assert load.shape == (len(toy[0].decoder_layers), toy[0].config.num_experts)
    np.testing.assert_allclose(load.sum(-1), 1.0, atol=1e-9)
    assert np.all(load >= 0)


def test_head_attention_is_causal_and_normalised(toy):
    model, tokenizer = toy
    t = len(tokenizer.encode(TEXT))
    for layer, head in ((0, 0), (len(model.decoder_layers) - 1, model.config.num_q_heads - 1)):
        att = explorer.head_attention(model, tokenizer, TEXT, layer, head)
        assert att.shape == (t, t)
        np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.triu(att, 1) == 0)
        assert att[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_static_figure_and_empty_text(toy):
    fig = explorer.static_figure(*toy, TEXT, 1, 2)
    assert len(fig.axes) >= 3 and "head 2" in fig.get_suptitle()
    with pytest.raises(ValueError):
        explorer.record(*toy, "")
