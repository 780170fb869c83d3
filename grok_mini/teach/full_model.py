"""Notebook 06, the full model: activation statistics layer by layer.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, _figure, _styled

__all__ = ["plot_forward_statistics"]


@_styled
def plot_forward_statistics(stats: dict[str, np.ndarray], *, title: str | None = None) -> Figure:
    """Four panels from `forward_statistics`: residual RMS, router entropy, attention entropy, next-token log-probs."""
    fig, axes = _figure(ncols=2, nrows=2, width=11.0, height=7.2)
    residual = stats["residual_rms"].reshape(stats["residual_rms"].shape[0], -1)
    layers = np.arange(residual.shape[0])
    ax = axes[0, 0]
    low, median, high = np.percentile(residual, [5, 50, 95], axis=1)
    ax.fill_between(layers, low, high, color=BLUE, alpha=0.2, label="5–95 % of tokens")
    ax.plot(layers, median, "o-", color=BLUE, label="median token")
    ax.plot(layers, np.sqrt(1 + 2 * layers), ":", color=GREY, label="√(1 + 2·layer): unit-RMS uncorrelated adds")
    ax.set_xlabel("layer (0 = the embedding × √d)")
    ax.set_ylabel("RMS of the residual stream")
    ax.set_title("residual stream: each layer adds two normalised updates", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[0, 1]
    entropy = stats["router_entropy"].reshape(stats["router_entropy"].shape[0], -1)
    gates = stats["top_gates"].reshape(stats["top_gates"].shape[0], -1, stats["top_gates"].shape[-1])
    moe_layers = np.arange(entropy.shape[0])
    low, median, high = np.percentile(entropy, [5, 50, 95], axis=1)
    ax.fill_between(moe_layers, low, high, color=GREEN, alpha=0.2, label="router entropy, 5–95 %")
    ax.plot(moe_layers, median, "o-", color=GREEN, label="router entropy / log E, median")
    ax.plot(moe_layers, gates[..., 0].mean(1), "s--", color=RED, label="mean top-1 gate")
    ax.plot(moe_layers, gates.sum(-1).mean(1), "^--", color=ORANGE, label="mean top-1 + top-2 gates")
    ax.axhline(1.0, color=GREY, linestyle=":", linewidth=1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer")
    ax.set_ylabel("value")
    ax.set_title("router: how sure is it about each token?", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")

    ax = axes[1, 0]
    attention = stats["attention_entropy"]
    image = ax.imshow(attention.T, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, h), value in np.ndenumerate(attention):
        ax.text(i, h, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black")
    ax.set_xticks(range(attention.shape[0]))
    ax.set_yticks(range(attention.shape[1]))
    ax.set_xlabel("layer")
    ax.set_ylabel("query head")
    ax.grid(False)
    fig.colorbar(image, ax=ax, shrink=0.9, label="entropy / log(visible keys)")
    ax.set_title("attention: 1 = spread evenly, 0 = one key", fontsize=10)

    ax = axes[1, 1]
    logprob = stats["next_token_logprob"].reshape(-1)
    vocab = stats["logits"].shape[-1]
    ax.hist(logprob, bins=40, color=PURPLE, alpha=0.8)
    ax.axvline(-np.log(vocab), color=RED, linestyle="--", label=f"uniform guess: −log {vocab:,} = {-np.log(vocab):.2f}")
    ax.axvline(logprob.mean(), color=BLUE, label=f"mean = −loss = {logprob.mean():.2f}")
    ax.set_xlabel("log-probability of the actual next token")
    ax.set_ylabel("positions")
    ax.set_title("output: how well does it predict the text?", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title or "One forward pass, layer by layer", fontweight="bold")
    return fig
