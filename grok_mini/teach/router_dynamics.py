"""Notebook 13, router dynamics: the gradient that reaches the router, collapse and recovery, specialisation.

The plots take what the notebook computed (or the stored runs it read) and draw it. Beside them, the
few helpers the notebook's exercises and tests share with it: `logit_gradients` (the gradient of a
fixed random projection of one MoE block's output with respect to its router logits, the computation
the notebook writes out in section 1) and `split_by_choice` (that gradient's mean size on the chosen
and on the unchosen experts' logits).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, _figure, _styled

__all__ = ["moe_block", "logit_gradients", "split_by_choice", "gradient_split", "share_curves",
           "plot_logit_gradients", "plot_gradient_vs_load", "plot_collapse", "plot_recovery",
           "plot_routing_by_kind"]


# ---- section 1: the gradient on the router logits ----------------------------------------------

def moe_block(layer, h, logits):
    """The MoE half of a DecoderLayer with the router logits given: h + norm_3(moe(norm_2(h))).

    layer: a `DecoderLayer`; h [N, D] residual stream; logits [N, E] (normally `layer.moe.router(norm_2(h))`).
    Follows the layer's config variant (router order, renormalised gates, a dropped rms_norm_3) and
    combines the experts with the dense reference dispatch.
    """
    from grok_mini import moe

    config = layer.config
    variant = config.variant
    x = layer.rms_norm_2(h)
    gates, chosen = moe.route(logits, config.num_selected_experts, order=variant.router,
                              renormalize=variant.renormalize)
    out = moe.dense_moe(layer.moe.experts, x, moe.gate_matrix(gates, chosen, config.num_experts))
    if "rms_norm_3" not in variant.drop_norms:
        out = layer.rms_norm_3(out)
    return h + out


def logit_gradients(layer, h, projection):
    """(∂L/∂logits [N, E], logits [N, E]) at the router's logits, L = Σ moe_block(layer, h, logits) ⊙ projection / N.

    A task-like loss: a fixed random linear read-out of the block's output, as a next layer would make.
    """
    import jax
    import jax.numpy as jnp

    h, projection = jnp.asarray(h, jnp.float32), jnp.asarray(projection, jnp.float32)
    logits = layer.moe.router(layer.rms_norm_2(h))

    def task_loss(z):
        return jnp.sum(moe_block(layer, h, z) * projection) / h.shape[0]

    return np.asarray(jax.grad(task_loss)(logits)), np.asarray(logits)


def split_by_choice(grads, logits, num_selected: int = 2) -> dict[str, float]:
    """Mean |gradient| on the logits of each token's top-k experts and on the others, and their ratio."""
    grads, logits = np.asarray(grads, np.float64), np.asarray(logits, np.float64)
    top = np.argsort(-logits, axis=-1, kind="stable")[..., :num_selected]
    chosen = np.zeros(logits.shape, bool)
    np.put_along_axis(chosen, top, True, axis=-1)
    size = np.abs(grads)
    result = {"chosen": float(size[chosen].mean()), "unchosen": float(size[~chosen].mean())}
    result["ratio"] = result["unchosen"] / result["chosen"]
    return result


def gradient_split(layer, h, projection) -> dict[str, float]:
    """split_by_choice of logit_gradients: the numbers section 1 prints, for one layer and one input."""
    return split_by_choice(*logit_gradients(layer, h, projection), layer.config.num_selected_experts)


@_styled
def plot_logit_gradients(splits: dict[str, list[dict]]) -> Figure:
    """Mean |∂L/∂logit| on chosen and unchosen experts, one dot per seed, for each setting (log scale)."""
    fig, [[ax, ax_ratio]] = _figure(ncols=2, width=10.0, height=3.8)
    colours = [BLUE, ORANGE, GREEN, PURPLE]
    for i, (label, runs) in enumerate(splits.items()):
        for j, part in enumerate(("chosen", "unchosen")):
            values = [r[part] for r in runs]
            x = 2 * i + j + np.linspace(-0.12, 0.12, len(values))
            ax.scatter(x, values, color=colours[i % 4], marker="o" if part == "chosen" else "v", s=30,
                       label=f"{label}" if j == 0 else None)
        ratios = [r["ratio"] for r in runs]
        ax_ratio.scatter(i + np.linspace(-0.12, 0.12, len(ratios)), ratios, color=colours[i % 4], s=30)
    ax.set_xticks([2 * i + j for i in range(len(splits)) for j in range(2)],
                  ["chosen", "unchosen"] * len(splits), fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("mean |∂L/∂logit|")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Gradient on each token's chosen and unchosen logits")
    ax_ratio.set_xticks(range(len(splits)), list(splits), fontsize=8)
    ax_ratio.set_yscale("log")
    ax_ratio.set_ylabel("unchosen / chosen")
    ax_ratio.set_xlim(-0.5, len(splits) - 0.5)
    ax_ratio.set_title("Their ratio, one dot per seed")
    medians = {label: np.median([r["ratio"] for r in runs]) for label, runs in splits.items()}
    first, *rest = medians.items()
    summary = ", ".join(f"{v:.1e} {k}" for k, v in [first, *rest])
    fig.suptitle(f"rms_norm_3 cuts the task gradient on unchosen experts' logits to almost nothing ({summary})",
                 fontsize=10, fontweight="bold")
    return fig


@_styled
def plot_gradient_vs_load(tokens, router_grad, expert_grad) -> Figure:
    """Per expert (and seed): tokens routed to it vs the size of its router column's and its FFN's gradient."""
    tokens, router_grad, expert_grad = (np.asarray(a, np.float64).ravel() for a in (tokens, router_grad, expert_grad))
    fig, axes = _figure(ncols=2, width=10.0, height=3.6)
    for ax, values, what, colour in ((axes[0, 0], router_grad, "router column w[:, e]", BLUE),
                                     (axes[0, 1], expert_grad, "expert e's three matrices", ORANGE)):
        r = np.corrcoef(tokens, values)[0, 1]
        ax.scatter(tokens, values, color=colour, s=18)
        ax.set_xlabel("tokens whose top 2 include expert e")
        ax.set_ylabel(f"|gradient| of {what}")
        ax.set_title(f"{what}: correlation {r:.2f}", fontsize=10)
    fig.suptitle("An expert that gets more tokens gets more gradient, in its router column and in its weights",
                 fontsize=10, fontweight="bold")
    return fig


# ---- section 2: stored training runs ----------------------------------------------------------

def share_curves(histories: list[dict], *, expert: int | None = None, layer: int | None = None) -> np.ndarray:
    """[seeds, steps]: per run and step, the share of the busiest expert (expert=None) or of `expert`.

    layer=None averages that share over the layers (the busiest expert is taken in each layer).
    """
    curves = []
    for history in histories:
        load = np.asarray(history["expert_load"], np.float64)  # [steps, L, E]
        share = load.max(-1) if expert is None else load[..., expert]  # [steps, L]
        curves.append(share.mean(-1) if layer is None else share[:, layer])
    return np.asarray(curves)


def _band(ax, curves: np.ndarray, colour: str, label: str) -> None:
    steps = np.arange(curves.shape[1])
    ax.plot(steps, curves.mean(0), color=colour, label=f"{label} (mean of {len(curves)} seeds)")
    ax.fill_between(steps, curves.min(0), curves.max(0), color=colour, alpha=0.2, linewidth=0)


@_styled
def plot_collapse(arms: dict[str, list[dict]], *, layer: int = -1) -> Figure:
    """Busiest expert's share per step in one layer, and final shares sorted, for each arm; band = seed range."""
    colours = [BLUE, RED, GREEN, PURPLE]
    fig, [[ax, ax_sorted]] = _figure(ncols=2, width=10.5, height=3.8)
    finals = {}
    for (label, histories), colour in zip(arms.items(), colours, strict=False):
        curves = share_curves(histories, layer=layer)
        _band(ax, curves, colour, label)
        load = np.asarray([np.asarray(h["expert_load"])[-10:, layer].mean(0) for h in histories])  # [seeds, E]
        ranked = -np.sort(-load, axis=-1)
        finals[label] = ranked[:, 0].mean()
        e = np.arange(load.shape[-1])
        ax_sorted.plot(e, ranked.mean(0), color=colour, marker="o", label=label)
        ax_sorted.fill_between(e, ranked.min(0), ranked.max(0), color=colour, alpha=0.2, linewidth=0)
    num_experts = load.shape[-1]
    for a in (ax, ax_sorted):
        a.axhline(1 / num_experts, color=GREY, linestyle=":", label=f"1/{num_experts}: balanced")
    name = f"layer {layer % np.asarray(histories[0]['expert_load']).shape[1]}"
    ax.set_xlabel("training step")
    ax.set_ylabel(f"busiest expert's share, {name}")
    ax.legend(fontsize=8)
    ax.set_title("Busiest expert per step", fontsize=10)
    ax_sorted.set_xlabel("experts, busiest first")
    ax_sorted.set_ylabel("share of the assignments (last 10 steps)")
    ax_sorted.set_title(f"Final load, {name}", fontsize=10)
    summary = ", ".join(f"{v:.2f} {k}" for k, v in finals.items())
    fig.suptitle(f"Without the balance loss the load concentrates: busiest expert's final share {summary}",
                 fontsize=10, fontweight="bold")
    return fig


@_styled
def plot_recovery(arms: dict[str, list[dict]], *, expert: int = 0) -> Figure:
    """The favoured expert's share per step (mean over layers) for each arm; band = range over seeds."""
    colours = [GREEN, ORANGE, RED, PURPLE]
    fig, [[ax]] = _figure(width=7.5, height=3.8)
    finals = {}
    for (label, histories), colour in zip(arms.items(), colours, strict=False):
        curves = share_curves(histories, expert=expert)
        _band(ax, curves, colour, label)
        finals[label] = curves[:, -10:].mean()
    num_experts = np.asarray(next(iter(arms.values()))[0]["expert_load"]).shape[-1]
    ax.axhline(1 / num_experts, color=GREY, linestyle=":", label=f"1/{num_experts}: balanced")
    ax.axhline(0.5, color=GREY, linestyle="--", linewidth=0.8, label="1/2: in every token's top 2")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"expert {expert}'s share (mean over layers)")
    ax.set_ylim(0, 0.55)
    ax.legend(fontsize=8)
    summary = ", ".join(f"{v:.2f} {k}" for k, v in finals.items())
    ax.set_title(f"Expert {expert} favoured at the start; final share {summary}", fontsize=10)
    return fig


# ---- section 3: specialisation --------------------------------------------------------------------

@_styled
def plot_routing_by_kind(tables: dict[str, np.ndarray], kinds: list[str], information: dict[str, float]) -> Figure:
    """Heatmaps of p(expert | token kind) [K, E], one per (model, layer); `information`: MI in bits per panel."""
    labels = list(tables)
    ncols = 2
    nrows = -(-len(labels) // ncols)
    fig, axes = _figure(ncols=ncols, nrows=nrows, width=10.0, height=1.2 + 1.9 * nrows)
    for index, label in enumerate(labels):
        ax = axes[index // ncols, index % ncols]
        table = np.asarray(tables[label])
        e = table.shape[-1]
        image = ax.imshow(table, cmap="Blues", vmin=0, vmax=0.5, aspect="auto")
        for i in range(table.shape[0]):
            for j in range(e):
                ax.text(j, i, f"{table[i, j]:.2f}".lstrip("0"), ha="center", va="center", fontsize=6,
                        color="white" if table[i, j] > 0.3 else "black")
        ax.set_xticks(range(e), [str(j) for j in range(e)], fontsize=8)
        ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
        ax.grid(False)
        ax.set_title(f"{label}: I(kind; expert) = {information[label]:.3f} bits", fontsize=9)
        if index // ncols == nrows - 1:
            ax.set_xlabel("expert")
    for index in range(len(labels), nrows * ncols):
        axes[index // ncols, index % ncols].axis("off")
    fig.colorbar(image, ax=axes, shrink=0.8, label="share of the kind's assignments")
    fig.suptitle("Trained routers send token kinds to their own experts; random ones barely do",
                 fontsize=10, fontweight="bold")
    return fig
