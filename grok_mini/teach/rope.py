"""Notebook 03, RoPE: frequencies, rotations, pairing conventions, the relative-position property.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from grok_mini.config import GrokConfig
from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, SKY, YELLOW, _figure, _styled

__all__ = ["plot_rope_pairing", "plot_rope_relative", "plot_rope_rotation", "plot_rope_wavelengths", "rope_angles",
           "rope_pair_trajectory", "rope_scores"]


def _rotate(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """layers.rotary_embedding on float64-ish numpy input: x [T, D] at positions [T] → [T, D]."""
    import jax.numpy as jnp

    from grok_mini.layers import rotary_embedding

    rotated = rotary_embedding(jnp.asarray(x, jnp.float32)[None, :, None, :],
                               jnp.asarray(positions)[None, :], base=base)
    return np.asarray(rotated[0, :, 0, :], np.float64)


def rope_angles(key_size: int, base: float = GrokConfig.rope_base) -> np.ndarray:
    """Angle (radians) that each dimension pair i turns per position, read off layers.rotary_embedding: [D/2]."""
    half = key_size // 2
    unit = np.zeros((half, key_size))
    unit[np.arange(half), np.arange(half)] = 1.0  # e_i: the first member of pair i
    pairs = _rotate(unit, np.ones(half, np.int32), base)  # [D/2, D]: row i is e_i at position 1
    return np.arctan2(pairs[np.arange(half), np.arange(half) + half], pairs[np.arange(half), np.arange(half)])


def rope_pair_trajectory(key_size: int, pair: int, positions: np.ndarray,
                         base: float = GrokConfig.rope_base) -> np.ndarray:
    """Where pair `pair` of the unit vector e_pair goes at each position: [T, 2] (dims pair, pair + D/2)."""
    x = np.zeros((len(positions), key_size))
    x[:, pair] = 1.0
    rotated = _rotate(x, positions, base)
    return rotated[:, [pair, pair + key_size // 2]]


def rope_scores(q: np.ndarray, k: np.ndarray, positions: np.ndarray, base: float = GrokConfig.rope_base) -> np.ndarray:
    """score[m, n] = ⟨RoPE(q, m), RoPE(k, n)⟩ for q, k [D] at every pair of positions: [T, T]."""
    rq = _rotate(np.broadcast_to(q, (len(positions), len(q))), positions, base)
    rk = _rotate(np.broadcast_to(k, (len(positions), len(k))), positions, base)
    return rq @ rk.T


@_styled
def plot_rope_wavelengths(key_size: int = 128, base: float = GrokConfig.rope_base, context: int = 8192) -> Figure:
    """Tokens per full turn for each of the D/2 rotating pairs, against the context length."""
    wavelength = 2 * np.pi / rope_angles(key_size, base)
    fig, [[ax]] = _figure(width=6.8, height=3.8)
    ax.semilogy(np.arange(len(wavelength)), wavelength, "o", markersize=3, color=BLUE)
    ax.axhline(context, color=RED, linestyle="--", linewidth=1)
    ax.text(1, context * 1.4, f"context: {context:,} tokens", color=RED)
    ax.annotate(f"pair 0: every {wavelength[0]:.1f} tokens", (0, wavelength[0]),
                xytext=(len(wavelength) * 0.15, wavelength[0] * 0.75), va="center",
                arrowprops={"arrowstyle": "->", "color": GREY})
    last = len(wavelength) - 1
    ax.annotate(f"pair {last}: every {wavelength[-1]:,.0f} tokens", (last, wavelength[-1]),
                xytext=(len(wavelength) * 0.35, wavelength[-1] * 0.9), arrowprops={"arrowstyle": "->", "color": GREY})
    ax.set_xlabel(f"dimension pair i (dims i and i + {key_size // 2})")
    ax.set_ylabel("tokens per full turn, 2π·base^(2i/D)")
    ax.set_title(f"RoPE with D = {key_size}, base {base:,.0f}: fast pairs for nearby, slow pairs for far")
    return fig


@_styled
def plot_rope_rotation(key_size: int = 128, pairs=(0, 16, 40), positions: int = 48,
                       base: float = GrokConfig.rope_base) -> Figure:
    """Each pair of dimensions is a 2-D vector that turns with position, at its own speed."""
    steps = np.arange(positions)
    fig, axes = _figure(ncols=len(pairs), width=3.0 * len(pairs), height=3.4)
    for ax, pair in zip(axes[0], pairs, strict=True):
        xy = rope_pair_trajectory(key_size, pair, steps, base)
        ax.plot(np.cos(np.linspace(0, 2 * np.pi, 200)), np.sin(np.linspace(0, 2 * np.pi, 200)),
                color=GREY, linewidth=0.5)
        points = ax.scatter(xy[:, 0], xy[:, 1], c=steps, cmap="viridis", s=18, zorder=3)
        ax.set_aspect("equal")
        ax.set_xlim(-1.25, 1.25)
        ax.set_ylim(-1.25, 1.25)
        ax.set_xlabel(f"dim {pair}")
        ax.set_ylabel(f"dim {pair + key_size // 2}")
        ax.set_title(f"pair {pair}: {rope_angles(key_size, base)[pair]:.3g} rad/token", fontsize=10)
    fig.colorbar(points, ax=axes[0].tolist(), label="position", shrink=0.8)
    fig.suptitle(f"RoPE turns a unit vector e_i by position (positions 0–{positions - 1})", fontweight="bold")
    return fig


@_styled
def plot_rope_pairing(key_size: int = 8) -> Figure:
    """Which dimensions rotate together: half-split (Grok-1, GPT-NeoX) versus interleaved (GPT-J, Meta Llama code)."""
    half = key_size // 2
    conventions = [("half-split (Grok-1): i with i + D/2", [(i, i + half) for i in range(half)]),
                   ("interleaved: 2i with 2i + 1", [(2 * i, 2 * i + 1) for i in range(half)])]
    colours = [BLUE, ORANGE, GREEN, PURPLE, RED, SKY, YELLOW, GREY]
    fig, axes = _figure(nrows=2, width=7.0, height=3.4)
    for ax, (title, pairs) in zip(axes[:, 0], conventions, strict=True):
        for p, (a, b) in enumerate(pairs):
            colour = colours[p % len(colours)]
            for d in (a, b):
                ax.add_patch(plt.Rectangle((d - 0.4, -0.4), 0.8, 0.8, color=colour, alpha=0.8))
                ax.text(d, 0, str(d), ha="center", va="center", color="white", fontweight="bold")
            ax.annotate("", (b, 0.45), (a, 0.45),
                        arrowprops={"arrowstyle": "<->", "color": colour, "connectionstyle": "arc3,rad=-0.3"})
        ax.set_xlim(-0.6, key_size - 0.4)
        ax.set_ylim(-0.6, 1.6)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"Dimension pairs that rotate together (D = {key_size}; colour = pair = frequency)",
                 fontweight="bold")
    return fig


@_styled
def plot_rope_relative(scores: np.ndarray) -> Figure:
    """score[m, n] is constant along diagonals: it depends on m − n only."""
    n = scores.shape[0]
    fig, axes = _figure(ncols=2, width=9.0, height=3.8)
    image = axes[0, 0].imshow(scores, cmap="RdBu_r", vmin=-np.abs(scores).max(), vmax=np.abs(scores).max())
    axes[0, 0].set_xlabel("key position n")
    axes[0, 0].set_ylabel("query position m")
    axes[0, 0].set_title("score(m, n) = RoPE(q, m) · RoPE(k, n)", fontsize=10)
    axes[0, 0].grid(False)
    fig.colorbar(image, ax=axes[0, 0], shrink=0.8)
    offsets = np.arange(-(n - 1), n)
    rows = (0, n // 3, 2 * n // 3, n - 1)
    for m, width, colour in zip(rows, (7, 4.5, 2.5, 1), (SKY, ORANGE, GREEN, BLUE), strict=True):
        axes[0, 1].plot(np.arange(n) - m, scores[m], linewidth=width, color=colour, alpha=0.9,
                        solid_capstyle="round", label=f"row m = {m}")
    axes[0, 1].set_xlim(offsets[0], offsets[-1])
    axes[0, 1].set_xlabel("offset n − m")
    axes[0, 1].set_ylabel("score")
    axes[0, 1].set_title("rows shifted by their m coincide", fontsize=10)
    axes[0, 1].legend(fontsize=8)
    fig.suptitle("RoPE scores depend only on the relative position", fontweight="bold")
    return fig
