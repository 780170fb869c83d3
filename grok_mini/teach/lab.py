"""Notebook 10 (the architecture lab): numbers and plots from a sweep folder, and prediction checks.

A sweep folder is what `grok_mini.explore.run_sweep` writes (`results.csv`, `runs/*.json`); the
stored one is `notebooks/data/lab_sweep`. Plots return matplotlib Figures (no pyplot state) whose
titles state what the data show.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from grok_mini.explore import read_results

__all__ = ["heldout_band", "final_table", "load_imbalance", "plot_heldout", "plot_cost", "plot_imbalance",
           "check_ranking", "check_gap", "ANSWER_WORDS"]


def _experiments(rows) -> list[str]:
    return list(dict.fromkeys(row["experiment"] for row in rows))


def heldout_band(out) -> dict:
    """{experiment: {"step", "mean", "min", "max"} arrays}: held-out loss over seeds at each evaluated step."""
    rows = read_results(out)
    band = {}
    for name in _experiments(rows):
        by_step: dict[int, list[float]] = {}
        for row in rows:
            if row["experiment"] == name and row["heldout_loss"] is not None:
                by_step.setdefault(int(row["step"]), []).append(float(row["heldout_loss"]))
        steps = sorted(by_step)
        values = [np.array(by_step[s]) for s in steps]
        band[name] = dict(step=np.array(steps), mean=np.array([v.mean() for v in values]),
                          min=np.array([v.min() for v in values]), max=np.array([v.max() for v in values]),
                          seeds=len(values[-1]) if values else 0)
    return band


def final_table(out) -> list[dict]:
    """One dict per experiment: final held-out loss (mean, min, max over seeds), active/total params, FLOPs/token."""
    rows = read_results(out)
    band = heldout_band(out)
    table = []
    for name in _experiments(rows):
        first = next(row for row in rows if row["experiment"] == name)
        b = band[name]
        table.append(dict(experiment=name, mean=float(b["mean"][-1]), min=float(b["min"][-1]), max=float(b["max"][-1]),
                          active_params=int(first["active_params"]), total_params=int(first["total_params"]),
                          flops_per_token=int(first["flops_per_token"])))
    return table


def load_imbalance(out) -> dict:
    """{experiment: (steps, imbalance [steps])}: the busiest expert's share per layer, averaged over layers and seeds.

    A perfectly even load is 1/E (0.125 for 8 experts); one expert taking everything is 1. An
    experiment with one expert (dense) is left out: its share is always 1.
    """
    runs = sorted((Path(out) / "runs").glob("*.json"))
    per: dict[str, list[np.ndarray]] = {}
    steps: dict[str, np.ndarray] = {}
    for path in runs:
        run = json.loads(path.read_text())
        load = np.asarray(run["history"]["expert_load"], np.float64)  # [step, layer, expert]
        if load.ndim != 3 or load.shape[-1] < 2:
            continue
        per.setdefault(run["experiment"], []).append(load.max(-1).mean(-1))
        steps[run["experiment"]] = np.asarray(run["history"]["step"])
    order = _experiments(read_results(out))
    return {name: (steps[name], np.mean(per[name], axis=0)) for name in order if name in per}


def _spread(band) -> float:
    """The largest seed range of the final held-out loss over the experiments."""
    return max(float(b["max"][-1] - b["min"][-1]) for b in band.values())


def plot_heldout(out, *, highlight=("grok-1", "top-1")) -> Figure:
    """Held-out loss against step: the mean over seeds and, shaded, the range of the seeds."""
    band = heldout_band(out)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, b) in enumerate(band.items()):
        strong = name in highlight
        color = f"C{i % 10}"
        ax.plot(b["step"], b["mean"], color=color, lw=2.2 if strong else 1.2, alpha=1 if strong else 0.8, label=name)
        ax.fill_between(b["step"], b["min"], b["max"], color=color, alpha=0.18 if strong else 0.07, lw=0)
    ax.set(xlabel="training step", ylabel="held-out loss (nats / token)")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(alpha=0.3)
    ax.set_ylim(top=min(ax.get_ylim()[1], 7.0))
    top1 = "top-1 is clearly worse" if "top-1" in band else ""
    ax.set_title(f"Seed bands (~{_spread(band):.2f} nats) overlap for most switches; {top1}".rstrip("; "))
    return fig


def plot_cost(out) -> Figure:
    """Final held-out loss (mean, seed range as error bars) against active parameters and FLOPs per token."""
    table = final_table(out)
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in zip(axes, ("active_params", "flops_per_token"),
                              ("active parameters (per token)", "forward FLOPs per token"), strict=True):
        for i, row in enumerate(table):
            ax.errorbar(row[key], row["mean"], yerr=[[row["mean"] - row["min"]], [row["max"] - row["mean"]]],
                        fmt="o", color=f"C{i % 10}", capsize=3)
            ax.annotate(row["experiment"], (row[key], row["mean"]), textcoords="offset points", xytext=(5, 3),
                        fontsize=8)
        ax.set(xlabel=label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final held-out loss (nats / token)")
    fig.suptitle("At ~the same FLOPs, top-1 ends worst and dense does not; the other switches barely move cost or loss")
    return fig


def plot_imbalance(out) -> Figure:
    """The busiest expert's share (mean over layers and seeds) against step, one line per experiment."""
    data = load_imbalance(out)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, (steps, value)) in enumerate(data.items()):
        ax.plot(steps, value, lw=2 if name in ("no balance loss", "grok-1") else 1, label=name, color=f"C{i % 10}")
    ax.axhline(1 / 8, color="gray", ls=":", lw=1)
    ax.annotate("even: 1/8", (0, 1 / 8), textcoords="offset points", xytext=(2, -10), fontsize=8, color="gray")
    ax.set(xlabel="training step", ylabel="busiest expert's share of assignments")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(alpha=0.3)
    finals = {name: float(value[-1]) for name, (_, value) in data.items()}
    worst = max(finals, key=finals.get)
    ax.set_title(f"Expert load: busiest share at the end, highest for {worst} ({finals[worst]:.2f})")
    return fig


# ==== prediction exercises ====

ANSWER_WORDS = ()  # the checkers never print the answer before an attempt; tests check it


def _final_means(out) -> dict[str, float]:
    return {row["experiment"]: row["mean"] for row in final_table(out)}


def check_ranking(prediction, out) -> bool:
    """Exercise 1: which experiment has the worst final held-out loss (mean over seeds)? A name."""
    if prediction is None:
        print("· exercise 1 (the worst experiment): not attempted yet")
        return False
    means = _final_means(out)
    if prediction not in means:
        print(f"✗ exercise 1: {prediction!r} is not an experiment of this sweep; choose one of {sorted(means)}")
        return False
    worst = max(means, key=means.get)
    if prediction == worst:
        print(f"✓ exercise 1: passed: {worst} is the worst ({means[worst]:.2f} nats, mean over seeds)")
        return True
    print(f"✗ exercise 1: {prediction} ends at {means[prediction]:.2f} nats; the worst is {worst} at "
          f"{means[worst]:.2f}. With one expert a token, each token gets half the expert width (fewer active "
          "parameters and FLOPs), and the router's gradient reaches only the chosen expert's gate.")
    return False


def check_gap(prediction, out, *, tolerance: float = 0.05) -> bool:
    """Exercise 2: the seed spread: max − min of grok-1's final held-out loss over seeds, in nats (a number)."""
    if prediction is None:
        print("· exercise 2 (the seed spread of grok-1): not attempted yet")
        return False
    band = heldout_band(out)["grok-1"]
    spread = float(band["max"][-1] - band["min"][-1])
    gaps = {name: abs(m - _final_means(out)["grok-1"]) for name, m in _final_means(out).items() if name != "grok-1"}
    smaller = sum(gap < spread for gap in gaps.values())
    try:
        value = float(prediction)
    except (TypeError, ValueError):
        print(f"✗ exercise 2: give a number of nats, got {prediction!r}")
        return False
    if abs(value - spread) <= tolerance:
        print(f"✓ exercise 2: passed: the seeds differ by {spread:.2f} nats; {smaller} of {len(gaps)} switches "
              "move the mean by less than that")
        return True
    print(f"✗ exercise 2: you said {value:.2f}; the two seeds end {spread:.2f} nats apart, and {smaller} of "
          f"{len(gaps)} switches move the mean by less than that. Changing only the seed (initial weights and "
          "batch order) moves a 100-step toy run as much as most design choices do: compare switches only "
          "across several seeds.")
    return False
