"""Notebook 07, training: loss curves and expert load of stored runs, and the plots of a run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, SKY, YELLOW, _figure, _styled

__all__ = ["save_plots", "plot_losses", "plot_run_expert_load", "plot_load_evolution", "plot_training_curves"]


def _moving_average(values, window: int) -> np.ndarray:
    values = np.asarray(values, np.float64)
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])  # causal: a step averages the ones before it
    return np.convolve(padded, kernel, mode="valid")


_RUN_COLOURS = (BLUE, RED, GREEN, PURPLE)


@_styled
def plot_training_curves(runs: dict[str, dict], *, smooth: int = 10) -> Figure:
    """Loss curves of training runs {label: grok_mini.train history}: cross-entropy, then the router losses."""
    fig, axes = _figure(ncols=2, width=11.0, height=4.8)
    ax = axes[0, 0]
    for (label, history), colour in zip(runs.items(), _RUN_COLOURS, strict=False):
        steps = np.asarray(history["step"])
        ax.plot(steps, history["ce"], color=colour, alpha=0.25, linewidth=0.8)
        ax.plot(steps, _moving_average(history["ce"], smooth), color=colour, label=f"{label}: training batches")
        ax.plot(history["heldout_step"], history["heldout_loss"], "o--", color=colour, markersize=4,
                label=f"{label}: held-out text")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title("next-token loss", fontsize=10)
    ax.legend(fontsize=8, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    ax = axes[0, 1]
    twin = ax.twinx()
    for (label, history), colour in zip(runs.items(), _RUN_COLOURS, strict=False):
        steps = np.asarray(history["step"])
        ax.plot(steps, _moving_average(history["balance"], smooth), color=colour, label=f"{label}: balance loss")
        twin.plot(steps, _moving_average(history["z"], smooth), color=colour, linestyle=":",
                  label=f"{label}: z-loss (right axis)")
    ax.axhline(1.0, color=GREY, linewidth=1, linestyle="--")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("balance loss (1 = balanced)")
    twin.set_ylabel("z-loss")
    twin.grid(False)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, ncols=2, loc="upper center",
              bbox_to_anchor=(0.5, -0.16))
    ax.set_title("router losses, mean over layers", fontsize=10)
    fig.suptitle(f"Training the toy Grok (moving average over {smooth} steps; faint: every step)", fontweight="bold")
    return fig


@_styled
def plot_load_evolution(runs: dict[str, dict], *, smooth: int = 10) -> Figure:
    """Per run: each layer's load CV over training (top) and the final share of each expert (bottom)."""
    count = len(runs)
    fig, axes = _figure(ncols=count, nrows=2, width=5.5 * count, height=7.0)
    loads = {label: np.asarray(history["expert_load"], np.float64) for label, history in runs.items()}
    top = max(float((load.std(-1) / load.mean(-1)).max()) for load in loads.values())
    for column, (label, history) in enumerate(runs.items()):
        load = loads[label]  # [steps, L, E]
        cv = load.std(-1) / load.mean(-1)
        ax = axes[0, column]
        colours = [SKY, BLUE, ORANGE, RED, GREEN, PURPLE, YELLOW, GREY]
        for layer in range(load.shape[1]):
            ax.plot(history["step"], _moving_average(cv[:, layer], smooth), color=colours[layer % 8],
                    label=f"layer {layer}")
        ax.set_ylim(0, top * 1.05)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("coefficient of variation of the load")
        ax.set_title(f"{label}: imbalance per layer", fontsize=10)
        ax.legend(fontsize=8, ncols=2, loc="upper right")
        ax = axes[1, column]
        final = load[-smooth:].mean(0)  # [L, E], the last steps
        e = final.shape[-1]
        image = ax.imshow(final, cmap="RdBu_r", vmin=0, vmax=2 / e, aspect="auto")
        for (i, j), value in np.ndenumerate(final):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(value - 1 / e) > 0.7 / e else "black")
        ax.set_xticks(range(e))
        ax.set_yticks(range(final.shape[0]))
        ax.set_xlabel("expert")
        ax.set_ylabel("layer")
        ax.grid(False)
        ax.set_title(f"{label}: share of the assignments, last {smooth} steps", fontsize=10)
    fig.colorbar(image, ax=axes[1].tolist(), shrink=0.9, label=f"share (fair: 1/{e})")
    fig.suptitle("Expert load during training, with and without the balance loss", fontweight="bold")
    return fig


def save_plots(history: dict, run_dir: str | Path) -> list[Path]:
    """loss.png and expert_load.png in run_dir."""
    run_dir = Path(run_dir)
    return [plot_losses(history, run_dir / "loss.png"), plot_run_expert_load(history, run_dir / "expert_load.png")]


# ---- the plots of a training run (matplotlib's object API: no pyplot, no GUI backend) -----------

def plot_losses(history: dict, path: str | Path, *, title: str = "") -> Path:
    """Training loss (cross-entropy) per step and held-out loss at its evaluation steps."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=110, layout="constrained")
    ax = fig.subplots()
    ax.plot(history["step"], history["ce"], lw=0.8, alpha=0.6, label="training cross-entropy (batch)")
    ax.plot(history["heldout_step"], history["heldout_loss"], "o-", ms=4, label="held-out cross-entropy")
    ax.set(xlabel="optimiser step", ylabel="nats per token", title=title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path)
    return Path(path)


def plot_run_expert_load(history: dict, path: str | Path, *, title: str = "") -> Path:
    """Share of the top-k assignments each expert receives, per layer, over training (ideal: 1/E)."""
    from matplotlib.figure import Figure

    load = np.asarray(history["expert_load"])  # [steps, L, E]
    steps = np.asarray(history["step"])
    num_layers, num_experts = load.shape[1], load.shape[2]
    window = max(1, len(steps) // 50)  # moving average: a batch's share is noisy
    kernel = np.ones(window) / window
    cols = min(num_layers, 4)
    rows = math.ceil(num_layers / cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows + 0.6), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True)).ravel()
    for layer, ax in enumerate(axes):
        if layer >= num_layers:
            ax.axis("off")
            continue
        for expert in range(num_experts):
            smooth = np.convolve(load[:, layer, expert], kernel, mode="valid")
            ax.plot(steps[window - 1:], smooth, lw=1, label=f"expert {expert}")
        ax.axhline(1 / num_experts, color="k", ls="--", lw=0.8)
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of assignments")
    fig.supxlabel("optimiser step")
    fig.suptitle(title or f"expert load per layer (dashed: balanced 1/{num_experts})", fontsize=10)
    axes[0].legend(fontsize=6, ncol=2)
    fig.savefig(path)
    return Path(path)
