"""Notebook 08, generation: sampling filters, the KV cache filling.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, _figure, _styled

__all__ = ["bigram_logits", "plot_cache_fill", "plot_sampling"]


def bigram_logits(tokens, context: int, vocab_size: int) -> np.ndarray:
    """log P(next | previous = context) from counts in a token stream [N]: [V], −inf for unseen pairs.

    A count-based language model: a peaked, real next-token distribution to sample from without training.
    """
    tokens = np.asarray(tokens)
    counts = np.bincount(tokens[1:][tokens[:-1] == context], minlength=vocab_size).astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.log(counts / counts.sum())


def _filtered_probs(logits: np.ndarray, *, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float = 1.0) -> np.ndarray:
    """The distribution generate.sample_tokens draws from: softmax(filter_logits(logits / T)), float64 [V]."""
    import jax.numpy as jnp

    from grok_mini.generate import filter_logits

    v = logits.shape[-1]
    scaled = jnp.asarray(logits / temperature, jnp.float32)[None]
    kept = np.asarray(filter_logits(scaled, jnp.array([v if top_k is None else top_k]), jnp.array([top_p],
                                    jnp.float32)))[0].astype(np.float64)
    probs = np.exp(kept - kept.max())
    return probs / probs.sum()


@_styled
def plot_sampling(logits: np.ndarray, pieces, *, shown: int = 16, temperatures=(0.5, 1.0, 2.0), top_k: int = 5,
                  top_p: float = 0.8, title: str | None = None) -> Figure:
    """What temperature, top-k and top-p (official nucleus) do to one next-token distribution (its `shown` top)."""
    order = np.argsort(-logits, kind="stable")[:shown]
    labels = [pieces[i] for i in order]
    x = np.arange(shown)
    fig, axes = _figure(ncols=3, width=13.0, height=4.2)
    ax = axes[0, 0]
    for temperature, colour in zip(temperatures, (BLUE, GREY, RED), strict=False):
        probs = _filtered_probs(logits, temperature=temperature)
        ax.plot(x, probs[order], "o-", color=colour, markersize=4, label=f"T = {temperature:g}")
    ax.set_title("temperature: divide the logits by T", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    base = _filtered_probs(logits)
    after = _filtered_probs(logits, top_k=top_k)
    ax.bar(x - 0.2, base[order], width=0.4, color=GREY, label="T = 1, no filter")
    ax.bar(x + 0.2, after[order], width=0.4, color=GREEN, label=f"top-k = {top_k}, renormalised")
    ax.set_title(f"top-k: keep the {top_k} likeliest (and ties)", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    after = _filtered_probs(logits, top_p=top_p)
    kept = after[order] > 0
    ax.bar(x[kept], base[order][kept], color=ORANGE, label="probability, kept")
    ax.bar(x[~kept], base[order][~kept], color=GREY, label="probability, removed")
    ax.plot(x, np.cumsum(base[order]), "s-", color=PURPLE, markersize=4, label="cumulative, likeliest first")
    ax.axhline(top_p, color=RED, linestyle="--", linewidth=1, label=f"top_p = {top_p:g}")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"top-p: kept until the total reaches {top_p:g}", fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    for ax in axes[0]:
        ax.set_xticks(x, labels, rotation=70, fontsize=8, family="monospace")
        ax.set_xlabel("next token (likeliest first)")
        ax.set_ylabel("probability")
    fig.suptitle(title or "Sampling filters on one next-token distribution", fontweight="bold")
    return fig


@_styled
def plot_cache_fill(key_masks: np.ndarray, lengths, *, title: str | None = None) -> Figure:
    """KV-cache slots holding a key, per row, after the prefill and after each decode step: key_masks [steps, B, S]."""
    steps, batch, slots = key_masks.shape
    fig, axes = _figure(nrows=batch, width=8.5, height=1.0 + 1.5 * batch)
    for row, ax in enumerate(axes[:, 0]):
        shown = key_masks[:, row].astype(float)
        ax.imshow(shown, cmap="Blues", vmin=0, vmax=1.3, aspect="auto")
        ax.axvline(lengths[row] - 0.5, color=RED, linewidth=1.5)
        ax.text(lengths[row] - 0.4, -0.6, f" prompt: {lengths[row]} tokens", color=RED, fontsize=8, va="bottom")
        ax.set_yticks(range(steps), ["prefill"] + [f"decode {i}" for i in range(1, steps)], fontsize=7)
        ax.set_xticks(range(slots))
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylabel(f"row {row}", fontsize=9)
        ax.grid(False)
    axes[-1, 0].set_xlabel("cache slot (position)")
    fig.suptitle(title or "The KV cache fills one slot per step, each row from its own length", fontweight="bold")
    return fig
