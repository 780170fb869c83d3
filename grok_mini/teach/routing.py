"""Notebook 05, expert routing: router probabilities, expert load, balance.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, SKY, YELLOW, _figure, _styled

__all__ = ["balance_sweep", "load_balance_stats", "plot_balance_sweep", "plot_expert_load", "plot_router_probs"]


def load_balance_stats(fractions: np.ndarray) -> dict[str, np.ndarray]:
    """Balance metrics of load fractions f [..., E] (Σ f = 1), one value per leading index.

    cv: coefficient of variation std(f)/mean(f) (0 = balanced); entropy: H(f)/log E (1 = balanced);
    max_violation: (max f − mean f)/mean f (MaxVio; 0 = balanced); dead: experts with no load.
    """
    f = np.asarray(fractions, np.float64)
    e = f.shape[-1]
    safe = np.where(f > 0, f, 1.0)
    return {"cv": f.std(-1) / f.mean(-1),
            "entropy": -(f * np.log(safe)).sum(-1) / np.log(e),
            "max_violation": (f.max(-1) - f.mean(-1)) / f.mean(-1),
            "dead": (f == 0).sum(-1)}


@_styled
def plot_router_probs(probs: np.ndarray, chosen: np.ndarray, labels=None, *, title: str | None = None) -> Figure:
    """Router probabilities [T, E] as a heatmap; the k chosen experts of each token are outlined."""
    t, e = probs.shape
    fig, [[ax]] = _figure(width=1.0 + 0.55 * e + 1.2, height=0.8 + 0.3 * t)
    image = ax.imshow(probs, cmap="Blues", vmin=0, vmax=max(0.5, float(probs.max())), aspect="auto")
    for i in range(t):
        for j in range(e):
            ax.text(j, i, f"{probs[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if probs[i, j] > 0.35 else "black")
        for rank, j in enumerate(chosen[i]):
            ax.add_patch(plt.Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, linewidth=2.2,
                                       edgecolor=RED if rank == 0 else ORANGE, linestyle="-" if rank == 0 else "--"))
    ax.set_xticks(range(e), [str(j) for j in range(e)])
    ax.set_yticks(range(t), labels if labels is not None else [str(i) for i in range(t)], fontsize=8)
    ax.set_xlabel("expert")
    ax.set_ylabel("token")
    ax.grid(False)
    fig.colorbar(image, ax=ax, shrink=0.8, label="router probability")
    ax.set_title(title or "Softmax over all experts; boxes: top-1 (red), top-2 (orange, dashed)", fontsize=10)
    return fig


@_styled
def plot_expert_load(fractions: np.ndarray, *, title: str | None = None) -> Figure:
    """Load fractions per layer and expert [L, E] as a heatmap, and per layer the CV and normalised entropy."""
    layers, e = fractions.shape
    stats = load_balance_stats(fractions)
    fig, axes = _figure(ncols=2, width=10.0, height=1.6 + 0.45 * layers, gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0, 0]
    image = ax.imshow(fractions, cmap="RdBu_r", vmin=0, vmax=2 / e, aspect="auto")
    for i in range(layers):
        for j in range(e):
            ax.text(j, i, f"{fractions[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(fractions[i, j] - 1 / e) > 0.7 / e else "black")
    ax.set_xticks(range(e), [str(j) for j in range(e)])
    ax.set_yticks(range(layers), [str(i) for i in range(layers)])
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.grid(False)
    fig.colorbar(image, ax=ax, shrink=0.9, label=f"share (fair: 1/{e} = {1 / e:.3f})")
    ax.set_title("load per expert (white = fair share)", fontsize=10)
    ax = axes[0, 1]
    y = np.arange(layers)
    ax.barh(y + 0.2, stats["cv"], height=0.4, color=RED, label="coefficient of variation (0 = balanced)")
    ax.barh(y - 0.2, stats["entropy"], height=0.4, color=GREEN, label="entropy / log E (1 = balanced)")
    ax.set_yticks(y, [str(i) for i in y])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("value")
    ax.set_ylabel("layer")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title or "Expert load", fontweight="bold")
    return fig


def balance_sweep(logits: np.ndarray, favoured: int, strengths, num_selected: int = 2) -> dict[str, np.ndarray]:
    """Add `strength` to one expert's router logits [N, E] and measure what the balance losses see.

    Returns per strength: fractions [S, E], balance_loss [S] and router_z_loss [S] (grok_mini.train),
    cv, entropy and max_violation [S] (load_balance_stats).
    """
    import jax
    import jax.numpy as jnp

    from grok_mini.train import balance_loss, expert_load, router_z_loss

    @jax.jit
    def measure(logits, strengths):  # one compiled program for the whole sweep
        def one(strength):
            shifted = logits.at[:, favoured].add(strength)
            return expert_load(shifted, num_selected), balance_loss(shifted, num_selected), router_z_loss(shifted)

        return jax.vmap(one)(strengths)

    fractions, balance, z_loss = measure(jnp.asarray(logits, jnp.float32), jnp.asarray(strengths, jnp.float32))
    out = {"fractions": np.asarray(fractions), "balance_loss": np.asarray(balance), "z_loss": np.asarray(z_loss)}
    out.update(load_balance_stats(out["fractions"]))
    out["strengths"], out["favoured"] = np.asarray(strengths, np.float64), np.asarray(favoured)
    return out


@_styled
def plot_balance_sweep(sweep: dict[str, np.ndarray], *, num_selected: int = 2) -> Figure:
    """Loads, balance metrics and the two router losses as one expert's logits get a growing head start."""
    s, f = sweep["strengths"], sweep["fractions"]
    e = f.shape[-1]
    fig, axes = _figure(ncols=3, width=12.0, height=3.8)
    ax = axes[0, 0]
    colours = [BLUE, ORANGE, GREEN, PURPLE, SKY, YELLOW, GREY, "#a6761d"]  # red marks the favoured expert
    favoured = int(sweep["favoured"])
    ax.stackplot(s, f.T, colors=[RED if j == favoured else colours[j % 8] for j in range(e)], alpha=0.85,
                 edgecolor="white", linewidth=0.5)
    middle = f[-1, :favoured].sum() + f[-1, favoured] / 2
    ax.text(s[-1] * 0.97, middle, f"expert {favoured}\n(head start)", ha="right", va="center", color="white",
            fontweight="bold")
    ax.set_xlim(s[0], s[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel("head start added to one expert's logit")
    ax.set_ylabel("share of the top-k assignments")
    ax.set_title("who gets the tokens (one band per expert)", fontsize=10)
    ax = axes[0, 1]
    ax.plot(s, sweep["cv"], color=RED, label="CV = std/mean of the load")
    ax.plot(s, sweep["entropy"], color=GREEN, label="entropy / log E")
    ax.plot(s, sweep["max_violation"] / (e - 1), color=PURPLE, linestyle="--", label="MaxVio / (E − 1)")
    ax.set_xlabel("head start added to one expert's logit")
    ax.set_ylabel("value")
    ax.set_title("balance metrics", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    ax.plot(s, sweep["balance_loss"], color=BLUE, label="Switch balance loss E·Σ fᵢPᵢ")
    ax.axhline(1.0, color=BLUE, linestyle=":", linewidth=1)
    ax.axhline(e / num_selected, color=GREY, linestyle=":", linewidth=1)
    ax.text(s[0], e / num_selected, f" E/k = {e / num_selected:g}: collapsed", va="bottom", fontsize=8, color=GREY)
    ax.text(s[0], 1.0, " 1: balanced", va="bottom", fontsize=8, color=BLUE)
    ax.set_ylim(0, e / num_selected * 1.15)
    ax.set_xlabel("head start added to one expert's logit")
    ax.set_ylabel("balance loss")
    twin = ax.twinx()
    twin.plot(s, sweep["z_loss"], color=ORANGE, label="router z-loss (logsumexp)²")
    twin.set_ylabel("z-loss", color=ORANGE)
    twin.grid(False)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="lower right")
    ax.set_title("the two router losses", fontsize=10)
    fig.suptitle("One expert pulling ahead: the load collapses onto it, the balance loss rises towards E/k",
                 fontweight="bold")
    return fig
