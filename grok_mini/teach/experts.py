"""Notebook 11, the experts: parameter and FLOP shares, the activation curves, the real gate pre-activations.

Drawing only, plus one small helper that the plots and the notebook share (`relative_change`); every
number the figures show is computed in the notebook.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, SKY, _figure, _styled

__all__ = ["relative_change", "plot_shares", "plot_activations", "plot_preactivations"]

# One colour per component and per activation, the same in every figure of the notebook.
COMPONENT_COLOURS = {"experts": BLUE, "attention": ORANGE, "embedding": GREEN, "router": PURPLE, "norms": GREY}
ACTIVATION_COLOURS = {"GELU (tanh form)": BLUE, "GELU (exact erf)": SKY, "SiLU": RED, "ReLU": GREEN}


def relative_change(changed, reference) -> float:
    """‖changed − reference‖ / ‖reference‖ over all elements, in float64."""
    changed, reference = np.asarray(changed, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(changed - reference) / np.linalg.norm(reference))


@_styled
def plot_shares(params: dict[str, float], flops: dict[str, float], *, title: str | None = None) -> Figure:
    """Two stacked bars: the share of each component in the parameters and in the FLOPs of one token.

    params, flops: {component: count}; components missing from one of them count as zero there.
    """
    names = list(dict.fromkeys([*params, *flops]))
    fig, [[ax]] = _figure(width=8.0, height=2.9)
    rows = [("parameters", params), ("FLOPs per token", flops)]
    for row, (_, counts) in enumerate(rows):
        total = float(sum(counts.values()))
        left = 0.0
        for name in names:
            share = counts.get(name, 0) / total
            ax.barh(row, share, left=left, color=COMPONENT_COLOURS.get(name, GREY), edgecolor="white",
                    label=name if row == 0 else None)
            if share > 0.06:
                ax.text(left + share / 2, row, f"{name}\n{share:.1%}", ha="center", va="center", color="white",
                        fontsize=9)
            left += share
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share")
    ax.grid(False)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncols=len(names), fontsize=8)
    ax.set_title(title or "Grok-1: the experts hold almost all parameters")
    return fig


@_styled
def plot_activations(x: np.ndarray, curves: dict[str, np.ndarray], *, reference: str = "GELU (tanh form)",
                     title: str | None = None) -> Figure:
    """Left: the activation curves over x; right: each curve minus the reference curve."""
    fig, axes = _figure(ncols=2, width=11.0, height=3.8)
    left, right = axes[0]
    for name, y in curves.items():
        colour = ACTIVATION_COLOURS.get(name, GREY)
        style = "--" if "erf" in name else "-"
        left.plot(x, y, style, color=colour, label=name, linewidth=2 if name == reference else 1.4)
        if name != reference:
            right.plot(x, np.asarray(y) - np.asarray(curves[reference]), style, color=colour, label=name)
    left.set_xlabel("pre-activation z")
    left.set_ylabel("activation(z)")
    left.legend()
    left.set_title("Four activations: alike for large |z|")
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xlabel("pre-activation z")
    right.set_ylabel(f"activation(z) − {reference}")
    right.legend()
    right.set_title("They differ where |z| < 3 (exact erf: invisible here)")
    if title:
        fig.suptitle(title, fontweight="bold")
    return fig


@_styled
def plot_preactivations(values: np.ndarray, x: np.ndarray, differences: dict[str, np.ndarray], *,
                        bins: int = 120, title: str | None = None) -> Figure:
    """A histogram of gate pre-activations, and over it |activation − reference| for each alternative.

    values: the recorded pre-activations (any shape); x: the grid the differences were computed on;
    differences: {name: |alternative(x) − reference(x)|}.
    """
    values = np.asarray(values, np.float64).reshape(-1)
    fig, [[ax]] = _figure(width=8.5, height=4.0)
    ax.hist(values, bins=bins, range=(float(x.min()), float(x.max())), density=True, color=GREY, alpha=0.5,
            label="gate pre-activations (density)")
    ax.set_xlabel("gate pre-activation z = x · linear")
    ax.set_ylabel("density")
    twin = ax.twinx()
    for name, difference in differences.items():
        twin.plot(x, difference, "--" if "erf" in name else "-", color=ACTIVATION_COLOURS.get(name, GREY),
                  label=f"|{name} − GELU (tanh)|")
    twin.set_ylabel("|difference| from the tanh GELU")
    twin.set_ylim(bottom=0)
    twin.grid(False)
    twin.spines["right"].set_visible(True)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper right")
    ax.set_title(title or "The real pre-activations sit where the activations differ")
    return fig
