"""Notebook 04, attention and GQA: head groups, KV cache, the logit cap, masks, patterns.
"""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from grok_mini.config import GrokConfig
from grok_mini.teach.style import BLUE, GIB, GREEN, GREY, ORANGE, PURPLE, RED, SKY, YELLOW, _figure, _styled

__all__ = ["plot_attention_patterns", "plot_gqa_groups", "plot_kv_cache_memory", "plot_logit_cap", "plot_masks"]


@_styled
def plot_gqa_groups(num_q_heads: int = 48, num_kv_heads: int = 8) -> Figure:
    """Query heads in contiguous groups, each group reading one key/value head."""
    group = num_q_heads // num_kv_heads
    colours = [BLUE, ORANGE, GREEN, PURPLE, RED, SKY, YELLOW, GREY]
    fig, [[ax]] = _figure(width=9.0, height=2.6)
    q_width = 1.0
    kv_centres = [(g * group + (group - 1) / 2) * q_width for g in range(num_kv_heads)]
    for h in range(num_q_heads):
        g = h // group
        ax.add_patch(plt.Rectangle((h * q_width - 0.42, 1.6), 0.84, 0.8, color=colours[g % 8], alpha=0.85))
        if num_q_heads <= 48:
            ax.text(h * q_width, 2.0, str(h), ha="center", va="center", fontsize=6, color="white")
        ax.plot([h * q_width, kv_centres[g]], [1.6, 0.8], color=colours[g % 8], linewidth=0.6)
    for g, centre in enumerate(kv_centres):
        ax.add_patch(plt.Rectangle((centre - group * 0.45, 0.0), group * 0.9, 0.8, color=colours[g % 8]))
        ax.text(centre, 0.4, f"K/V head {g}", ha="center", va="center", fontsize=8, color="white",
                fontweight="bold")
    ax.text(-1.0, 2.0, "query\nheads", ha="right", va="center")
    ax.set_xlim(-4, num_q_heads * q_width)
    ax.set_ylim(-0.2, 2.6)
    ax.axis("off")
    ax.set_title(f"GQA: {num_q_heads} query heads share {num_kv_heads} K/V heads; "
                 f"query head h reads K/V head h // {group}")
    return fig


@_styled
def plot_kv_cache_memory(config: GrokConfig, contexts=(1024, 2048, 4096, 8192), *, batch: int = 1) -> Figure:
    """KV-cache GiB against context for multi-head, the model's grouped-query, and multi-query attention."""
    variants = [(f"MHA: {config.num_q_heads} K/V heads", config.num_q_heads, RED),
                (f"GQA (Grok-1): {config.num_kv_heads} K/V heads", config.num_kv_heads, BLUE),
                ("MQA: 1 K/V head", 1, GREEN)]
    fig, [[ax]] = _figure(width=6.8, height=3.8)
    contexts = np.asarray(contexts)
    for label, heads, colour in variants:
        per_token = dataclasses.replace(config, num_kv_heads=heads).kv_cache_bytes_per_token()
        gib = per_token * contexts * batch / GIB
        ax.plot(contexts, gib, marker="o", color=colour, label=label)
        ax.text(contexts[-1] * 1.02, gib[-1], f"{gib[-1]:.2f} GiB", va="center", fontsize=8, color=colour)
    ax.set_xlim(0, contexts[-1] * 1.2)
    ax.set_xlabel(f"tokens in the cache (batch {batch})")
    ax.set_ylabel("KV cache, GiB (bf16, all layers)")
    ax.set_title(f"GQA keeps {config.num_q_heads // config.num_kv_heads}× less KV cache than full multi-head")
    ax.legend(loc="upper left")
    return fig


@_styled
def plot_logit_cap(cap: float = GrokConfig.max_attn_val) -> Figure:
    """cap·tanh(x / cap): the identity for small logits, flattening towards ±cap for large ones."""
    x = np.linspace(-4 * cap, 4 * cap, 801)
    capped = cap * np.tanh(x / cap)
    fig, axes = _figure(ncols=2, width=9.0, height=3.6)
    ax = axes[0, 0]
    ax.plot(x, x, ":", color=GREY, label="no cap")
    ax.plot(x, capped, color=BLUE, linewidth=2, label=f"{cap:g}·tanh(x/{cap:g})")
    for sign in (1, -1):
        ax.axhline(sign * cap, color=RED, linestyle="--", linewidth=0.8)
    ax.set_ylim(-1.6 * cap, 1.6 * cap)
    ax.set_xlabel("logit q·k/√d before the cap")
    ax.set_ylabel("logit after the cap")
    ax.set_title("capped logits stay within ±30", fontsize=10)
    ax.legend(loc="upper left")
    ax = axes[0, 1]
    positive = np.linspace(0.0, 4 * cap, 401)[1:]
    shrink = 1 - np.tanh(positive / cap) * cap / positive
    ax.plot(positive, shrink, color=ORANGE, linewidth=2, label="relative shrink, 1 − capped/x")
    ax.plot(positive, 1 - np.tanh(positive / cap) ** 2, color=GREEN, linewidth=2, label="gradient d capped / dx")
    for value, offset, align in ((10, (8, -4), "left"), (cap, (-8, 4), "right")):
        shrunk = 1 - np.tanh(value / cap) * cap / value
        ax.plot([value], [shrunk], "o", color=ORANGE)
        ax.annotate(f"x = {value:g}: −{shrunk:.1%}", (value, shrunk), xytext=offset, textcoords="offset points",
                    ha=align, fontsize=8)
    ax.set_xlabel("logit before the cap (|x|)")
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1.05)
    ax.set_title("small logits pass almost unchanged", fontsize=10)
    ax.legend(loc="center right", fontsize=8)
    fig.suptitle("Grok-1's attention logit soft-cap", fontweight="bold")
    return fig


@_styled
def plot_masks(tokens, pad_token: int = 0) -> Figure:
    """The causal mask, the padding (key) mask, and the mask attention uses: their AND (one sequence)."""
    import jax.numpy as jnp

    from grok_mini.layers import attention_mask

    tokens = np.asarray(tokens)[None] if np.ndim(tokens) == 1 else np.asarray(tokens)[:1]
    t = tokens.shape[1]
    positions = jnp.broadcast_to(jnp.arange(t), tokens.shape)
    everything = jnp.ones(tokens.shape, bool)
    panels = [("causal: key position ≤ query position", attention_mask(positions, positions, everything)),
              (f"padding: key is not pad (id {pad_token})",
               jnp.broadcast_to(jnp.asarray(tokens != pad_token)[:, None, :], (1, t, t))),
              ("both (what attention uses)", attention_mask(positions, positions, jnp.asarray(tokens != pad_token)))]
    fig, axes = _figure(ncols=3, width=10.0, height=4.0)
    for ax, (title, mask) in zip(axes[0], panels, strict=True):
        ax.imshow(np.asarray(mask[0]), cmap="Blues", vmin=0, vmax=1.3)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(t), [str(v) for v in tokens[0]], fontsize=7, rotation=90)
        ax.set_yticks(range(t), [str(v) for v in tokens[0]], fontsize=7)
        ax.set_xlabel("key (token id)")
        ax.set_ylabel("query (token id)")
        ax.grid(False)
    fig.suptitle("Masks (dark = may attend): pad keys are hidden, pad queries still compute",
                 fontweight="bold")
    return fig


@_styled
def plot_attention_patterns(weights: np.ndarray, tokens, *, layer: int = 0, title: str | None = None,
                            labels=None) -> Figure:
    """Attention weights [KV, G, T, S] of one sequence and layer, one panel per query head.

    The axes show the token ids, or `labels` (one string per token, e.g. the tokenizer's pieces) if given.
    """
    kv, g, t, s = weights.shape
    tokens = np.asarray(tokens).reshape(-1)
    names = [str(v) for v in tokens] if labels is None else [_printable(label) for label in labels]
    fig, axes = _figure(ncols=kv * g, width=2.6 * kv * g + 0.8, height=3.2 if labels is None else 3.8)
    for head in range(kv * g):
        ax = axes[0, head]
        image = ax.imshow(weights[head // g, head % g], cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"query head {head}\n(K/V head {head // g})", fontsize=9)
        ax.set_xticks(range(s), names[:s], fontsize=6, rotation=90)
        ax.set_yticks(range(t), names[:t], fontsize=6)
        ax.set_xlabel("key" + (" (token id)" if labels is None else ""))
        if head == 0:
            ax.set_ylabel("query" + (" (token id)" if labels is None else ""))
        ax.grid(False)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="attention weight")
    fig.suptitle(title or f"Attention weights, layer {layer}", fontweight="bold")
    return fig


def _printable(piece: str) -> str:
    """A tokenizer piece as a tick label: line breaks as ↵ (a raw one would break the axis)."""
    return piece.replace("\n", "↵")
