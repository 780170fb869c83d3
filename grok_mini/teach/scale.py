"""Notebook 00, overview and scale: where Grok-1's parameters and memory go.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from grok_mini.config import GrokConfig
from grok_mini.teach.style import BLUE, GIB, GREY, ORANGE, RED, _figure, _human, _styled

__all__ = ["plot_memory_per_gpu", "plot_parameter_breakdown"]


@_styled
def plot_parameter_breakdown(config: GrokConfig) -> Figure:
    """Parameters per component, all of them versus those one token uses, on a linear scale: the experts'
    share is the point (the norms and the router are too small to see as bars; their counts are written)."""
    counts = config.param_counts()
    share = config.num_selected_experts / config.num_experts
    active = {name: count * (share if name == "experts" else 1) for name, count in counts.items()}
    names = list(counts)[::-1]
    fig, [[ax]] = _figure(width=7.5, height=3.6)
    y = np.arange(len(names))
    ax.barh(y + 0.2, [counts[n] for n in names], height=0.4, color=BLUE, label="stored")
    ax.barh(y - 0.2, [active[n] for n in names], height=0.4, color=ORANGE,
            label=f"used per token ({config.num_selected_experts} of {config.num_experts} experts)")
    pad = max(counts.values()) * 0.01
    for i, n in enumerate(names):
        ax.text(counts[n] + pad, i + 0.2, f"{_human(counts[n])} ({counts[n] / config.num_params:.1%})", va="center",
                fontsize=8)
        ax.text(active[n] + pad, i - 0.2, _human(active[n]), va="center", fontsize=8)
    ax.set_xlim(0, max(counts.values()) * 1.3)
    ax.set_yticks(y, names)
    ax.set_xlabel("parameters")
    ax.set_title(f"{_human(config.num_params)} parameters, {_human(config.num_active_params)} used per token "
                 f"(experts: {counts['experts'] / config.num_params:.1%})")
    ax.legend(loc="lower right")
    return fig


@_styled
def plot_memory_per_gpu(config: GrokConfig, gpus=(1, 2, 4, 8), *, gpu_gib: float = 80.0,
                        context: int | None = None, batch: int = 1) -> Figure:
    """Weights (bf16 and the int8 release format) plus one full KV cache, split evenly over n GPUs."""
    context = config.sequence_len if context is None else context
    kv = config.kv_cache_bytes_per_token() * context * batch / GIB
    formats = [("bf16", BLUE), ("int8", ORANGE)]
    fig, [[ax]] = _figure(width=7.5, height=4.2)
    x = np.arange(len(gpus))
    for j, (fmt, colour) in enumerate(formats):
        weights = config.weight_bytes(fmt) / GIB
        offset = (j - 0.5) * 0.38
        per_gpu = [weights / n for n in gpus]
        ax.bar(x + offset, per_gpu, width=0.38, color=colour, label=f"weights, {fmt}")
        ax.bar(x + offset, [kv / n for n in gpus], bottom=per_gpu, width=0.38, color=colour, alpha=0.45,
               hatch="//", edgecolor="white")
        for i, n in enumerate(gpus):
            total = per_gpu[i] + kv / n
            ax.text(x[i] + offset, total + 6, f"{total:.0f}", ha="center", fontsize=8,
                    color=RED if total > gpu_gib else "black")
    ax.bar([0], [0], color=GREY, alpha=0.45, hatch="//", edgecolor="white",
           label=f"KV cache, {batch} × {context:,} tokens")
    ax.axhline(gpu_gib, color=RED, linestyle="--", linewidth=1.2, label=f"one {gpu_gib:.0f} GB card")
    ax.set_xticks(x, [f"{n} GPU" + ("s" if n > 1 else "") for n in gpus])
    ax.set_ylabel("GiB per GPU (weights + KV cache)")
    ax.set_title("Memory per GPU: bf16 needs all 8 cards; int8 fits 8 with room, 4 only on paper")
    ax.legend(loc="upper right")
    return fig
