"""Notebook 10, the architecture lab: numbers and plots from a sweep folder, and the prediction checks.

A sweep folder is what `grok_mini.explore.run_sweep` writes (`results.csv`, `runs/*.json`); the
stored one is `notebooks/data/lab_sweep`. The functions without a verb that draws (`heldout_band`,
`final_losses`, `final_table`, `load_imbalance`) compute what the plots show, so a notebook can
print them and the tests can check them. The `check_*` functions are the notebook's exercises:
the student writes a prediction into a variable, the checker compares it with the stored sweep.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from grok_mini.explore import read_results
from grok_mini.teach.exercises import ExerciseFailed, _record, run_check
from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, SKY, YELLOW, _figure, _human, _styled

__all__ = ["heldout_band", "final_losses", "final_table", "load_imbalance", "seed_spread",
           "plot_heldout", "plot_cost", "plot_imbalance", "check_worst", "check_seed_spread", "check_flops_ratio"]

# One colour per experiment of the default sweep, in its order; a student's extra runs come after.
_COLOURS = (BLUE, RED, GREEN, YELLOW, PURPLE, SKY, GREY, "#000000", ORANGE)


def _experiments(rows) -> list[str]:
    return list(dict.fromkeys(row["experiment"] for row in rows))


def heldout_band(out) -> dict[str, dict]:
    """{experiment: {"step", "mean", "min", "max": arrays [evaluations], "seeds": n}}: held-out loss over seeds."""
    rows = read_results(out)
    band = {}
    for name in _experiments(rows):
        by_step: dict[int, list[float]] = {}
        for row in rows:
            if row["experiment"] == name and row["heldout_loss"] is not None:
                by_step.setdefault(int(row["step"]), []).append(float(row["heldout_loss"]))
        steps = sorted(by_step)
        values = [np.asarray(by_step[s]) for s in steps]
        band[name] = dict(step=np.asarray(steps), mean=np.asarray([v.mean() for v in values]),
                          min=np.asarray([v.min() for v in values]), max=np.asarray([v.max() for v in values]),
                          seeds=len(values[-1]))
    return band


def final_losses(out) -> list[dict]:
    """One dict per (experiment, seed): the last held-out loss, active/total parameters, FLOPs a token."""
    last: dict[tuple[str, int], dict] = {}
    for row in read_results(out):
        if row["heldout_loss"] is not None:
            last[row["experiment"], int(row["seed"])] = row  # rows run in step order: the last one stays
    return [dict(experiment=name, seed=seed, heldout_loss=float(row["heldout_loss"]), step=int(row["step"]),
                 active_params=int(row["active_params"]), total_params=int(row["total_params"]),
                 flops_per_token=int(row["flops_per_token"]))
            for (name, seed), row in last.items()]


def final_table(out) -> list[dict]:
    """One dict per experiment: final held-out loss (mean, min, max over seeds), active/total params, FLOPs/token."""
    table: dict[str, dict] = {}
    for row in final_losses(out):
        entry = table.setdefault(row["experiment"], dict(
            experiment=row["experiment"], losses=[], active_params=row["active_params"],
            total_params=row["total_params"], flops_per_token=row["flops_per_token"]))
        entry["losses"].append(row["heldout_loss"])
    for entry in table.values():
        losses = entry.pop("losses")
        entry.update(mean=float(np.mean(losses)), min=min(losses), max=max(losses), seeds=len(losses))
    return list(table.values())


def seed_spread(out, experiment: str = "grok-1") -> float:
    """max − min over seeds of one experiment's final held-out loss, in nats."""
    row = next(r for r in final_table(out) if r["experiment"] == experiment)
    return row["max"] - row["min"]


def load_imbalance(out) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{experiment: (steps [S], share [S])}: the busiest expert's share of a layer's assignments, per step.

    Averaged over layers and seeds. An even load is 1/E (0.125 for 8 experts); one expert taking
    every assignment is 1 (top-2 caps it at 1/2: a token's two experts are distinct). Experiments
    with one expert (dense) are left out: their share is always 1.
    """
    shares: dict[str, list[np.ndarray]] = {}
    steps: dict[str, np.ndarray] = {}
    for path in sorted((Path(out) / "runs").glob("*.json")):
        run = json.loads(path.read_text())
        load = np.asarray(run["history"]["expert_load"], np.float64)  # [S, L, E]
        if load.shape[-1] < 2:
            continue
        shares.setdefault(run["experiment"], []).append(load.max(-1).mean(-1))  # [S]
        steps[run["experiment"]] = np.asarray(run["history"]["step"])
    order = _experiments(read_results(out))
    return {name: (steps[name], np.mean(shares[name], axis=0)) for name in order if name in shares}


# ==== plots ==========================================================================================


def _colours(names) -> dict[str, str]:
    return {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(names)}


@_styled
def plot_heldout(out, *, extra=None, highlight=("grok-1", "top-1")) -> Figure:
    """Held-out loss against step: per experiment the mean over seeds and, shaded, the seeds' range.

    `extra`: another sweep folder (e.g. a student's short runs), drawn dashed on the same axes.
    """
    band = heldout_band(out)
    more = heldout_band(extra) if extra is not None else {}
    colours = _colours([*band, *(f"{name} (yours)" for name in more)])
    fig, [[ax]] = _figure(width=8.5, height=4.8)
    for name, b in band.items():
        strong = name in highlight
        ax.plot(b["step"], b["mean"], color=colours[name], linewidth=2.2 if strong else 1.1, label=name)
        ax.fill_between(b["step"], b["min"], b["max"], color=colours[name], alpha=0.2 if strong else 0.07, linewidth=0)
    for name, b in more.items():
        label = f"{name} (yours)"
        ax.plot(b["step"], b["mean"], "o--", color=colours[label], markersize=4, linewidth=1.6,
                label=f"{label}, {b['step'][-1]} steps")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("held-out loss (nats per token)")
    ax.set_ylim(top=min(ax.get_ylim()[1], 7.0))  # step 0 (≈7.8 for all) would flatten the rest
    ax.legend(fontsize=8, ncols=2)
    spread = max(b["max"][-1] - b["min"][-1] for b in band.values())
    worst = max(band, key=lambda name: band[name]["mean"][-1])
    ax.set_title(f"Seed bands up to {spread:.2f} nats wide overlap for most switches; {worst} ends worst")
    return fig


@_styled
def plot_cost(out) -> Figure:
    """Final held-out loss (one point per seed) against active parameters and against FLOPs per token.

    Experiments of the same cost (five of the default sweep) are spread a little sideways so that
    each stays visible; the legend names them.
    """
    rows = final_losses(out)
    names = _experiments(rows)
    colours = _colours(names)
    fig, axes = _figure(ncols=2, width=11.5, height=4.4, sharey=True)
    for ax, key, label in zip(axes[0], ("active_params", "flops_per_token"),
                              ("active parameters per token", "forward FLOPs per token"), strict=True):
        cost = {name: next(r[key] for r in rows if r["experiment"] == name) for name in names}
        width = (max(cost.values()) - min(cost.values())) or max(cost.values())
        for name in names:
            same = [n for n in names if cost[n] == cost[name]]  # experiments at this cost, dodged sideways
            x = cost[name] + (same.index(name) - (len(same) - 1) / 2) * 0.012 * width
            losses = [r["heldout_loss"] for r in rows if r["experiment"] == name]
            ax.scatter([x] * len(losses), losses, color=colours[name], s=30, label=name, zorder=3)
        ax.set_xlabel(label)
        ax.xaxis.set_major_formatter(lambda value, _: _human(value))
    axes[0, 0].set_ylabel("final held-out loss (nats per token)")
    axes[0, 1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="one point a seed",
                      title_fontsize=8)
    table = {row["experiment"]: row for row in final_table(out)}
    saving = 1 - table["top-1"]["flops_per_token"] / table["grok-1"]["flops_per_token"] if "top-1" in table else 0
    fig.suptitle(f"Top-1 and dense do {saving:.0%} less work a token; top-1 ends worst, "
                 "the other switches barely move cost or loss", fontweight="bold")
    return fig


@_styled
def plot_imbalance(out) -> Figure:
    """The busiest expert's share (mean over layers and seeds) against step, one line per experiment."""
    data = load_imbalance(out)
    colours = _colours(_experiments(read_results(out)))
    fig, [[ax]] = _figure(width=8.5, height=4.4)
    for name, (steps, share) in data.items():
        ax.plot(steps, share, color=colours[name], linewidth=2.2 if name in ("grok-1", "no balance loss") else 1.1,
                label=name)
    ax.axhline(1 / 8, color=GREY, linewidth=1, linestyle=":")
    ax.annotate("even: 1/8", (0, 1 / 8), textcoords="offset points", xytext=(2, -11), fontsize=8, color=GREY)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("busiest expert's share of a layer's choices")
    ax.legend(fontsize=8, ncols=2)
    finals = {name: float(share[-1]) for name, (_, share) in data.items()}
    worst, best = max(finals, key=finals.get), min(finals, key=finals.get)
    ax.set_title(f"The busiest expert's final share: highest with {worst} ({finals[worst]:.2f}), "
                 f"lowest with {best} ({finals[best]:.2f})")
    return fig


# ==== the prediction exercises ========================================================================
# Each takes the student's prediction (None until they write one) and the sweep folder. The
# answer is printed only once the prediction is right; a wrong one is told how it is wrong
# (never the answer), and each further wrong attempt run_check adds one more hint.


def _predicted(name: str, prediction, variable: str) -> bool:
    """False (and says so) while the prediction is still None; run_check's own message is about a stub."""
    if prediction is not None:
        return True
    print(f"· {name}: not attempted yet. Set `{variable}` to your prediction and run the cell again.")
    _record(name, "not attempted")  # what the grader's gradebook gets for an untouched stub
    return False


def _number(prediction, variable: str) -> float:
    try:
        return float(prediction)
    except (TypeError, ValueError):
        raise ExerciseFailed(f"`{variable}` should be a number, got {type(prediction).__name__} "
                             f"{prediction!r}") from None


def check_worst(prediction, out, *, variable: str = "worst") -> bool:
    """Exercise 1: the name of the experiment with the highest final held-out loss (mean over seeds)."""
    if not _predicted("the worst experiment", prediction, variable):
        return False

    def check():
        name = prediction
        means = {row["experiment"]: row["mean"] for row in final_table(out)}
        if name not in means:
            raise ExerciseFailed(f"{name!r} is not an experiment of this sweep; choose one of {sorted(means)}")
        worst = max(means, key=means.get)
        if name != worst:
            higher = sum(m > means[name] for m in means.values())
            raise ExerciseFailed(f"{name} is not the worst: {higher} experiment{'s' if higher > 1 else ''} end"
                                 f"{'' if higher > 1 else 's'} with a higher held-out loss than its "
                                 f"{means[name]:.2f} nats")
        gap = means[worst] - means["grok-1"]
        return (f"{worst} ends at {means[worst]:.2f} nats, {gap:.2f} behind grok-1, more than the seeds' spread: "
                "each token gets one expert's width instead of two")
    return run_check("the worst experiment", check,
                     hints=("Which change takes work away from every token, not just a safeguard?",
                            "Compare the active parameters per token of the experiments.",
                            "One of them gives each token one expert's width instead of two."))


def check_seed_spread(prediction, out, *, tolerance: float = 0.05, variable: str = "spread") -> bool:
    """Exercise 2: how many nats apart grok-1's two seeds end (within `tolerance`)."""
    if not _predicted("the seed spread", prediction, variable):
        return False

    def check():
        value = _number(prediction, variable)
        spread = seed_spread(out)
        if abs(value - spread) > tolerance:
            direction = "too large" if value > spread else "too small"
            raise ExerciseFailed(f"{value:.2f} nats is {direction} (by more than {tolerance} nats)")
        means = {row["experiment"]: row["mean"] for row in final_table(out)}
        moved = [name for name, m in means.items() if name != "grok-1" and abs(m - means["grok-1"]) > spread]
        return (f"the seeds end {spread:.2f} nats apart; only {len(moved)} of {len(means) - 1} switches "
                f"({', '.join(moved)}) move the mean by more")
    return run_check("the seed spread", check,
                     hints=("A seed changes only the initial weights and the order of the batches.",
                            "After 100 steps the loss still falls by about 0.1 nats every 10 steps: is a seed "
                            "worth more or less than ten steps?",
                            "Read the seed 0 / seed 1 range of grok-1 in the table above."))


def check_flops_ratio(prediction, out, *, tolerance: float = 0.03, variable: str = "ratio") -> bool:
    """Exercise 3: top-1's forward FLOPs per token as a fraction of grok-1's (within `tolerance`)."""
    if not _predicted("the FLOPs ratio", prediction, variable):
        return False

    def check():
        value = _number(prediction, variable)
        flops = {row["experiment"]: row["flops_per_token"] for row in final_table(out)}
        ratio = flops["top-1"] / flops["grok-1"]
        if abs(value - ratio) > tolerance:
            if abs(value - 0.5) < 0.01:
                raise ExerciseFailed("0.5 halves everything, but top-1 halves only the experts' work: the "
                                     "attention, the router and the tied output projection stay the same")
            direction = "too large" if value > ratio else "too small"
            raise ExerciseFailed(f"{value:.3f} is {direction} (by more than {tolerance})")
        return (f"{ratio:.3f}: one expert is {1 - ratio:.0%} of grok-1's work a token and top-1 drops it; "
                "attention, the router and the output projection stay")
    return run_check("the FLOPs ratio", check,
                     hints=("Top-1 halves only the experts' work a token: what else does a token cost?",
                            "Add up, per layer, the attention projections, the selected experts' three matrices, "
                            "the router and the attention scores, then the tied output projection once.",
                            "The toy has width 128, expert width 176, 8 experts, 4 layers, 4 query and 2 key/value "
                            "heads of 32, a vocabulary of 2048 and 64 tokens of context; the config's "
                            "flops_per_token method does the sum."))
