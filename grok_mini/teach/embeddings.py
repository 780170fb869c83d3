"""Notebook 02, embeddings and RMSNorm: eps, the sandwich norms.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from matplotlib.figure import Figure

from grok_mini.config import GrokConfig
from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, SKY, _figure, _styled

__all__ = ["plot_rmsnorm_eps", "plot_sandwich_residual", "sandwich_experiment", "sandwich_residual_rms"]


@_styled
def plot_rmsnorm_eps(eps: float = GrokConfig.rms_norm_eps) -> Figure:
    """RMS of RMSNorm's output against the RMS of its input: 1 above √eps, shrinking below it."""
    import jax.numpy as jnp

    from grok_mini.layers import RMSNorm

    norm = RMSNorm(64, eps=eps)
    direction = np.random.default_rng(0).standard_normal(64)
    direction /= np.sqrt(np.mean(direction**2))  # RMS exactly 1
    rms_in = np.logspace(-6, 2, 81)
    x = jnp.asarray(rms_in[:, None] * direction[None, :], jnp.float32)
    rms_out = np.sqrt(np.mean(np.asarray(norm(x), np.float64) ** 2, axis=-1))
    fig, [[ax]] = _figure(width=6.5, height=3.8)
    ax.loglog(rms_in, rms_out, color=BLUE, linewidth=2, label="layers.RMSNorm (scale = 1)")
    ax.loglog(rms_in, rms_in / np.sqrt(eps), color=GREY, linestyle=":", label="x / √eps (eps dominates)")
    ax.axvline(math.sqrt(eps), color=RED, linestyle="--", linewidth=1)
    ax.text(math.sqrt(eps) * 1.3, 1e-2, f"√eps = {math.sqrt(eps):.4f}", color=RED)
    ax.set_ylim(1e-4, 3)
    ax.set_xlabel("RMS of the input vector")
    ax.set_ylabel("RMS of the output")
    ax.set_title(f"RMSNorm (eps = {eps:g}): output RMS 1, unless the input is tiny")
    ax.legend(loc="lower right")
    return fig


@functools.cache
def _sandwich_layer():
    """One decoder layer with switches, compiled once and reused for every layer (they share one structure)."""
    from flax import nnx

    @nnx.jit(static_argnames=("post_norms",))
    def step(layer, h, positions, key_mask, post_norms, gain):
        attended, _ = layer.multi_head_attention(layer.rms_norm(h), positions, key_mask)
        attended = attended * gain
        h = h + (layer.rms_norm_1(attended) if post_norms else attended)
        mixed = layer.moe(layer.rms_norm_2(h)) * gain
        return h + (layer.rms_norm_3(mixed) if post_norms else mixed)

    return step


def sandwich_residual_rms(model, tokens, *, post_norms: bool = True, gain: float = 1.0) -> np.ndarray:
    """RMS of the residual stream after the embedding and after each layer, averaged over tokens: [L + 1].

    Walks `model.decoder_layers` with their own submodules. post_norms=False leaves out
    rms_norm_1 and rms_norm_3 (a pre-norm-only transformer); `gain` multiplies each sublayer's
    output before its post-norm, which is what scaling its output weights by `gain` would do.
    With post_norms=True and gain=1 this is the model's own computation (notebook 02 checks
    it against the `residual_rms` the model records).
    """
    import jax.numpy as jnp

    cfg = model.config
    tokens = jnp.asarray(tokens)
    key_mask = tokens != cfg.pad_token
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    h = model.in_out_embed[...][tokens].astype(model.dtype) * jnp.asarray(cfg.embedding_multiplier_scale, model.dtype)
    real = np.asarray(key_mask, np.float64)

    def rms(h):  # one number: the RMS over features, averaged over the real (non-pad) tokens
        per_token = np.sqrt(np.mean(np.asarray(h, np.float64) ** 2, axis=-1))
        return float(np.sum(per_token * real) / np.sum(real))

    step = _sandwich_layer()
    out = [rms(h)]
    for layer in model.decoder_layers:
        h = step(layer, h, positions, key_mask, post_norms, jnp.asarray(gain, model.dtype))
        out.append(rms(h))
    return np.asarray(out)


def sandwich_experiment(model, tokens, gain: float = 10.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Residual RMS per layer with and without the post-norms, with output weights ×1 and ×`gain`.

    Returns the four labelled curves and the guide √(1 + 2·layer): what the RMS would be if the
    embedding (RMS ≈ 1) and the 2 unit-RMS additions per layer were uncorrelated.
    """
    curves = {}
    for post_norms, name in ((True, "sandwich (Grok-1)"), (False, "pre-norm only")):
        for g in (1.0, gain):
            label = f"{name}, weights ×1" if g == 1.0 else f"{name}, output weights ×{g:g}"
            curves[label] = sandwich_residual_rms(model, tokens, post_norms=post_norms, gain=g)
    return curves, np.sqrt(1 + 2 * np.arange(len(model.decoder_layers) + 1))


@_styled
def plot_sandwich_residual(curves: dict[str, np.ndarray], *, expected: np.ndarray | None = None) -> Figure:
    """Residual RMS per layer for labelled variants; labels containing 'pre-norm only' are dashed."""
    fig, [[ax]] = _figure(width=7.5, height=4.8)
    colours = [BLUE, SKY, RED, ORANGE, GREEN, PURPLE]
    for (label, values), colour in zip(curves.items(), colours, strict=False):
        style = "--" if "pre-norm only" in label else "-"
        marker = "s" if "×1" in label and "×10" not in label else "o"
        ax.plot(np.arange(len(values)), values, style, marker=marker, markersize=4 if marker == "s" else 3,
                color=colour, label=label)
    if expected is not None:
        ax.plot(np.arange(len(expected)), expected, ":", color=GREY,
                label="√(1 + 2·layer): unit-RMS, uncorrelated adds")
    ax.set_yscale("log")
    ax.set_xlabel("layer (0 = after the embedding ×√d)")
    ax.set_ylabel("RMS of the residual stream")
    ax.set_title("With post-norms, the residual ignores the scale of the sublayers' weights")
    fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    return fig
