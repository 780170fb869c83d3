"""grok_mini.teach.lab (the stored sweep's numbers and plots, the prediction checks)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path

import matplotlib
import numpy as np
import pytest

from grok_mini.teach import exercises, lab

SWEEP = Path(__file__).resolve().parents[1] / "notebooks" / "data" / "lab_sweep"


def test_seed_band_brackets_the_mean_and_matches_the_runs():
    band = lab.heldout_band(SWEEP)
    assert list(band)[:2] == ["grok-1", "top-1"] and len(band) == 8
    for b in band.values():
        assert b["seeds"] == 2
        assert np.all(b["min"] <= b["mean"]) and np.all(b["mean"] <= b["max"])
        assert b["step"][0] == 0 and b["step"][-1] == 100
        assert b["mean"][-1] < b["mean"][0] - 2  # every run learned: from ~7.8 to ~5
    # The stored numbers the notebook's prose quotes (seed 0 / seed 1 of grok-1: 5.080 / 4.898).
    finals = {(r["experiment"], r["seed"]): r["heldout_loss"] for r in lab.final_losses(SWEEP)}
    assert finals["grok-1", 0] == pytest.approx(5.080, abs=1e-3)
    assert finals["grok-1", 1] == pytest.approx(4.898, abs=1e-3)
    assert band["grok-1"]["max"][-1] == pytest.approx(5.080, abs=1e-3)


def test_final_table_top1_worst_dense_has_no_inactive_parameters():
    table = {row["experiment"]: row for row in lab.final_table(SWEEP)}
    means = {name: row["mean"] for name, row in table.items()}
    assert max(means, key=means.get) == "top-1"
    assert means["top-1"] > means["grok-1"] + lab.seed_spread(SWEEP)  # outside the noise
    assert table["dense"]["active_params"] == table["dense"]["total_params"]
    assert table["top-1"]["total_params"] == table["grok-1"]["total_params"]
    assert table["top-1"]["active_params"] < table["grok-1"]["active_params"]
    assert table["top-1"]["flops_per_token"] / table["grok-1"]["flops_per_token"] == pytest.approx(0.747, abs=1e-3)
    assert 0.1 < lab.seed_spread(SWEEP) < 0.25


def test_imbalance_between_even_and_one_expert():
    data = lab.load_imbalance(SWEEP)
    assert "dense" not in data and "grok-1" in data
    for steps, share in data.values():
        assert len(steps) == len(share) == 100
        assert np.all(share >= 1 / 8 - 1e-6) and np.all(share <= 1 + 1e-9)
    assert np.all(data["grok-1"][1] <= 0.5 + 1e-6)  # top-2: a token's two experts are distinct
    assert data["no balance loss"][1][-1] > data["grok-1"][1][-1] + 0.03


def test_plots_are_figures_with_findings_and_leave_pyplot_settings_alone(tmp_path):
    import matplotlib.pyplot as plt

    before = dict(matplotlib.rcParams)
    for figure in (lab.plot_heldout(SWEEP), lab.plot_cost(SWEEP), lab.plot_imbalance(SWEEP)):
        title = figure.get_suptitle() or figure.axes[0].get_title()
        assert title and figure.axes
        plt.close(figure)
    assert "top-1 ends worst" in lab.plot_heldout(SWEEP).axes[0].get_title()
    assert "no balance loss" in lab.plot_imbalance(SWEEP).axes[0].get_title()
    assert dict(matplotlib.rcParams) == before
    plt.close("all")


def test_plot_heldout_draws_an_extra_folder_dashed():
    import matplotlib.pyplot as plt

    figure = lab.plot_heldout(SWEEP, extra=SWEEP)  # any sweep folder: here the stored one again
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert "grok-1" in labels and "grok-1 (yours), 100 steps" in labels
    plt.close(figure)


@pytest.fixture(autouse=True)
def fresh_attempts():
    exercises._attempts.clear()
    yield
    exercises._attempts.clear()


CHECKS = (lab.check_worst, lab.check_seed_spread, lab.check_flops_ratio)
RIGHT = ("top-1", 0.18, 0.75)
WRONG = (("MQA", "not the worst"), (1.0, "too large"), (0.5, "only the experts"))


def test_not_attempted_gives_nothing_away(capsys):
    for check in CHECKS:
        assert check(None, SWEEP) is False
    out = capsys.readouterr().out
    assert out.count("not attempted yet") == 3
    for answer in ("top-1", "0.18", "0.75", "0.747", "5.30"):
        assert answer not in out


def test_wrong_predictions_say_how_without_the_answer_then_hint(capsys):
    for check, (wrong, words), right in zip(CHECKS, WRONG, RIGHT, strict=True):
        with pytest.raises(exercises.ExerciseFailed) as first:
            check(wrong, SWEEP)
        assert words in str(first.value) and "Hint" not in str(first.value)
        assert str(right) not in str(first.value)
        with pytest.raises(exercises.ExerciseFailed) as second:
            check(wrong, SWEEP)
        assert "Hint 1 of 3" in str(second.value)
    with pytest.raises(exercises.ExerciseFailed, match="not an experiment"):
        lab.check_worst("nonsense", SWEEP)
    with pytest.raises(exercises.ExerciseFailed, match="too small"):
        lab.check_seed_spread(0.01, SWEEP)


def test_right_predictions_pass_and_explain(capsys):
    for check, right in zip(CHECKS, RIGHT, strict=True):
        assert check(right, SWEEP) is True
    out = capsys.readouterr().out
    assert out.count("✓") == 3
    assert "0.31 behind grok-1" in out and "only 1 of 7 switches (top-1)" in out and "0.747" in out
