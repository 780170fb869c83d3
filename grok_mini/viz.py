"""The plots that the notebooks and `figures/` share, one section per notebook.

Every plotting function returns a matplotlib Figure (drawn with pyplot, so a notebook shows it
inline; `grok_mini.figures` saves the same Figure as a PNG). Functions whose name does not start
with a verb that draws (`record_*`, `rope_*`, `sandwich_*`) compute the numbers a plot shows,
with the package's own modules, so a notebook can print them too.

To add plots for a new notebook: append a section `# ==== NN topic ====` at the end, keep to the
conventions below (labelled axes, a title that states the finding, `@_styled`), and register a
figure for it in `grok_mini/figures.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from grok_mini.config import GrokConfig

__all__ = [
    # 00 overview and scale
    "plot_parameter_breakdown", "plot_memory_per_gpu",
    # 02 embeddings and RMSNorm
    "plot_rmsnorm_eps", "sandwich_residual_rms", "sandwich_experiment", "plot_sandwich_residual",
    # 03 RoPE
    "rope_angles", "rope_pair_trajectory", "rope_scores", "plot_rope_wavelengths", "plot_rope_rotation",
    "plot_rope_pairing", "plot_rope_relative",
    # 04 attention and GQA
    "record_attention", "plot_gqa_groups", "plot_kv_cache_memory", "plot_logit_cap", "plot_masks",
    "plot_attention_patterns",
    # 01 tokenization
    "vocabulary_layout", "plot_vocabulary_layout", "plot_tokenized_text", "compression_by_vocab_size",
    "plot_compression",
    # 05 expert routing
    "record_router_logits", "load_balance_stats", "plot_router_probs", "plot_expert_load", "balance_sweep",
    "plot_balance_sweep",
    # 06 the full model
    "forward_statistics", "activation_statistics", "plot_forward_statistics",
    # 08 generation
    "bigram_logits", "plot_sampling", "plot_cache_fill",
    # 07 training
    "plot_training_curves", "plot_load_evolution",
    # 09 the real weights
    "release_layers", "plot_release_order", "plot_block_scales", "sharding_map", "spec_map", "plot_sharding",
]

# ==== shared style ==================================================================================

GIB = 2**30
BILLION = 1e9
# Colour-blind-safe palette (Okabe–Ito), one meaning per colour across the notebooks.
BLUE, ORANGE, GREEN, RED, PURPLE, GREY, SKY, YELLOW = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#7f7f7f", "#56B4E9", "#F0E442")

_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}


def _styled(plot):
    """Draw inside the shared style without changing the caller's matplotlib settings."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs) -> Figure:
        with plt.rc_context(_STYLE):
            figure = plot(*args, **kwargs)
            # Jupyter switches interactive mode on when pyplot first loads its backend, which may happen
            # inside this context; leaving the context must not switch it off (figures would stop showing).
            interactive = matplotlib.is_interactive()
        matplotlib.interactive(interactive)
        return figure

    return wrapper


def _figure(ncols: int = 1, nrows: int = 1, *, width: float = 7.0, height: float = 4.0, **kwargs):
    return plt.subplots(nrows, ncols, figsize=(width, height), layout="constrained", squeeze=False, **kwargs)


def _human(n: float) -> str:
    """315684820992 → '315.7 B', 1572864 → '1.6 M'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f}"


# ==== 00 overview and scale =========================================================================


@_styled
def plot_parameter_breakdown(config: GrokConfig) -> Figure:
    """Parameters per component, all of them versus those one token uses (log scale: norms are tiny)."""
    counts = config.param_counts()
    share = config.num_selected_experts / config.num_experts
    active = {name: count * (share if name == "experts" else 1) for name, count in counts.items()}
    names = list(counts)[::-1]
    fig, [[ax]] = _figure(width=7.5, height=3.6)
    y = np.arange(len(names))
    ax.barh(y + 0.2, [counts[n] for n in names], height=0.4, color=BLUE, label="stored")
    ax.barh(y - 0.2, [active[n] for n in names], height=0.4, color=ORANGE,
            label=f"used per token ({config.num_selected_experts} of {config.num_experts} experts)")
    for i, n in enumerate(names):
        ax.text(counts[n] * 1.15, i + 0.2, _human(counts[n]), va="center", fontsize=8)
        ax.text(active[n] * 1.15, i - 0.2, _human(active[n]), va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(1e5, max(counts.values()) * 30)
    ax.set_yticks(y, names)
    ax.set_xlabel("parameters (log scale)")
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


# ==== 02 embeddings and RMSNorm =====================================================================


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


# ==== 03 RoPE ========================================================================================


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


# ==== 04 attention and GQA ===========================================================================


@functools.cache
def _jitted_forward():
    from flax import nnx

    return nnx.jit(lambda model, tokens: model(tokens))


def record_attention(model, tokens) -> np.ndarray:
    """Attention weights of every layer for `tokens` [B, T]: [L, B, KV, G, T, S] (query head = kv·G + g).

    Records with `grok_mini.recording`, which takes the recordings out of the model again.
    """
    import jax.numpy as jnp

    from grok_mini.model import recording

    with recording(model, attention=True) as recorded:
        _jitted_forward()(model, jnp.asarray(tokens))
    layers = recorded.state["decoder_layers"]
    return np.stack([np.asarray(layers[i]["multi_head_attention"]["attention_weights"][...], np.float32)
                     for i in range(len(model.decoder_layers))])


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
def plot_attention_patterns(weights: np.ndarray, tokens, *, layer: int = 0, title: str | None = None) -> Figure:
    """Attention weights [KV, G, T, S] of one sequence and layer, one panel per query head."""
    kv, g, t, s = weights.shape
    tokens = np.asarray(tokens).reshape(-1)
    fig, axes = _figure(ncols=kv * g, width=2.6 * kv * g + 0.8, height=3.2)
    for head in range(kv * g):
        ax = axes[0, head]
        image = ax.imshow(weights[head // g, head % g], cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"query head {head}\n(K/V head {head // g})", fontsize=9)
        ax.set_xticks(range(s), [str(v) for v in tokens[:s]], fontsize=6, rotation=90)
        ax.set_yticks(range(t), [str(v) for v in tokens[:t]], fontsize=6)
        ax.set_xlabel("key (token id)")
        if head == 0:
            ax.set_ylabel("query (token id)")
        ax.grid(False)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="attention weight")
    fig.suptitle(title or f"Attention weights, layer {layer}", fontweight="bold")
    return fig


# ==== 01 tokenization ================================================================================

_PIECE_KINDS = {"special": GREY, "user-defined": PURPLE, "byte": ORANGE, "merged": BLUE, "character": GREEN}


def vocabulary_layout(tokenizer) -> list[tuple[str, int, int]]:
    """Runs of the vocabulary by kind of piece: [(kind, first id, count), ...] in id order.

    Kinds: "special" ([PAD], [BOS], [EOS], [UNK]), "user-defined" (the 65 fixed pieces), "byte"
    (<0x00> … <0xFF>), "merged" (learned by BPE, most frequent first) and "character" (the single
    characters of the training text, which SentencePiece's BPE lists after its merges).
    """
    from grok_mini.tokenizer import USER_DEFINED_PIECES

    processor, fixed = tokenizer.processor, set(USER_DEFINED_PIECES)
    runs: list[list] = []
    for i in range(tokenizer.vocab_size):
        piece = processor.id_to_piece(i)
        if processor.is_control(i) or processor.is_unknown(i):
            kind = "special"
        elif processor.is_byte(i):
            kind = "byte"
        elif piece in fixed:
            kind = "user-defined"
        else:
            kind = "character" if len(piece) == 1 else "merged"
        if runs and runs[-1][0] == kind:
            runs[-1][2] += 1
        else:
            runs.append([kind, i, 1])
    return [tuple(run) for run in runs]


@_styled
def plot_vocabulary_layout(tokenizer, *, zoom: int = 400, name: str | None = None) -> Figure:
    """The vocabulary as a strip of ids coloured by kind of piece, whole and zoomed on the first `zoom` ids."""
    runs = vocabulary_layout(tokenizer)
    fig, axes = _figure(nrows=2, width=9.0, height=3.4)
    for ax, limit in zip(axes[:, 0], (tokenizer.vocab_size, zoom), strict=True):
        for kind, start, count in runs:
            if start >= limit:
                continue
            shown = min(count, limit - start)
            ax.barh(0, shown, left=start, height=0.8, color=_PIECE_KINDS[kind], edgecolor="white", linewidth=0.5)
            if shown / limit > 0.06:
                label = f"{kind}\n{start:,}–{start + count - 1:,}" if count > 1 else f"{kind}\n{start:,}"
                ax.text(start + shown / 2, 0, label, ha="center", va="center", color="white", fontsize=8,
                        fontweight="bold")
        ax.set_xlim(0, limit)
        ax.set_yticks([])
        ax.grid(False)
        ax.set_xlabel("token id" + ("" if limit == tokenizer.vocab_size else f" (the first {limit})"))
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour in _PIECE_KINDS.values()]
    counts = {kind: sum(c for k, _, c in runs if k == kind) for kind in _PIECE_KINDS}
    axes[0, 0].legend(handles, [f"{k} ({counts[k]:,})" for k in _PIECE_KINDS], ncols=5, fontsize=8,
                      loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(f"{name or tokenizer.source}: {tokenizer.vocab_size:,} ids; the first 325 are fixed by the "
                 "Grok-1 recipe", fontweight="bold")
    return fig


def _shown_piece(piece: str) -> str:
    return piece.replace("\n", "\\n").replace("\t", "\\t")


@_styled
def plot_tokenized_text(tokenizer, text: str, *, columns: int = 64, title: str | None = None) -> Figure:
    """The pieces of `text` as coloured boxes (▁ is a space, \\n a newline), each with its id underneath."""
    pieces, ids = tokenizer.pieces(text), tokenizer.encode(text)
    processor = tokenizer.processor
    rows, row, used = [], [], 0
    for piece, token in zip(pieces, ids, strict=True):
        width = max(len(_shown_piece(piece)), len(str(token))) + 1
        if row and used + width > columns:
            rows.append(row)
            row, used = [], 0
        row.append((piece, token, used, width))
        used += width
    rows.append(row)
    fig, [[ax]] = _figure(width=columns / 9.5 + 0.4, height=0.62 * len(rows) + 0.9)
    palette = [SKY, YELLOW, "#9ad0b7", "#e8b4d2"]
    for r, row in enumerate(rows):
        for n, (piece, token, left, width) in enumerate(row):
            if processor.is_byte(token):
                colour = ORANGE
            elif 4 <= token < 69:
                colour = PURPLE
            else:
                colour = palette[n % len(palette)]
            ax.add_patch(plt.Rectangle((left, -r * 2 - 0.9), width - 0.25, 1.0, color=colour, alpha=0.85))
            ax.text(left + (width - 0.25) / 2, -r * 2 - 0.4, _shown_piece(piece), ha="center", va="center",
                    family="monospace", fontsize=9)
            ax.text(left + (width - 0.25) / 2, -r * 2 - 1.35, str(token), ha="center", va="center",
                    family="monospace", fontsize=7, color=GREY)
    ax.set_xlim(-0.5, columns + 0.5)
    ax.set_ylim(-2 * len(rows) + 0.2, 0.4)
    ax.axis("off")
    ax.set_title(title or f"{len(text)} characters → {len(ids)} tokens ({tokenizer.source})\n"
                 "orange: byte fallback · purple: fixed pieces (ids 4–68) · grey: token id", fontsize=10)
    return fig


def compression_by_vocab_size(train_lines, heldout_text: str, vocab_sizes=(512, 1024, 2048, 4096, 8192)) -> np.ndarray:
    """Characters per token on held-out text for BPE tokenizers trained with the Grok-1 recipe: [len(vocab_sizes)]."""
    from grok_mini.tokenizer import train_tokenizer

    lines = list(train_lines)
    return np.array([len(heldout_text) / len(train_tokenizer(lines, v).encode(heldout_text)) for v in vocab_sizes])


@_styled
def plot_compression(vocab_sizes, chars_per_token, *, others: dict | None = None) -> Figure:
    """Characters per token on held-out text against vocabulary size; `others` adds {label: (vocab, chars/token)}."""
    vocab_sizes, chars_per_token = np.asarray(vocab_sizes), np.asarray(chars_per_token)
    fig, [[ax]] = _figure(width=6.8, height=3.8)
    ax.semilogx(vocab_sizes, chars_per_token, "o-", color=BLUE, base=2, label="trained here (Grok-1 recipe)")
    for v, c in zip(vocab_sizes, chars_per_token, strict=True):
        ax.annotate(f"{c:.2f}", (v, c), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=8)
    ax.axvline(325, color=GREY, linestyle=":", linewidth=1)
    ax.text(340, chars_per_token.min(), "325 fixed ids", color=GREY, fontsize=8, rotation=90, va="bottom")
    for (label, (v, c)), colour in zip((others or {}).items(), (RED, GREEN, PURPLE), strict=False):
        ax.plot([v], [c], "*", markersize=12, color=colour, label=f"{label}: {c:.2f}")
    ax.set_xlabel("vocabulary size (log scale)")
    ax.set_ylabel("characters per token (held-out text)")
    ax.set_title("A larger vocabulary means fewer, longer tokens, with diminishing returns")
    ax.legend(loc="lower right")
    return fig


# ==== 05 expert routing ==============================================================================


def record_router_logits(model, tokens) -> np.ndarray:
    """Router logits of every MoE layer for `tokens` [B, T]: [L, B, T, E] float32.

    Records with `grok_mini.recording`, which takes the recordings out of the model again.
    """
    import jax.numpy as jnp

    from grok_mini.model import recording

    with recording(model, router=True) as recorded:
        _jitted_forward()(model, jnp.asarray(tokens))
    layers = recorded.state["decoder_layers"]
    return np.stack([np.asarray(layers[i]["moe"]["router_logits"][...], np.float32)
                     for i in range(len(model.decoder_layers))])


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


# ==== 06 the full model ==============================================================================


def forward_statistics(model, tokens) -> dict[str, np.ndarray]:
    """One forward pass of `model` on `tokens` [B, T] (no padding), with activation statistics per layer.

    Records the residual RMS, router logits and attention weights (`grok_mini.recording`) and
    summarises them with `activation_statistics`.
    """
    import jax.numpy as jnp

    from grok_mini.model import recording

    with recording(model, residual=True, router=True, attention=True) as recorded:
        logits = _jitted_forward()(model, jnp.asarray(tokens))
    return activation_statistics(model, tokens, logits, recorded.state)


def activation_statistics(model, tokens, logits, recorded) -> dict[str, np.ndarray]:
    """Per-layer summaries of one recorded forward pass (`recorded`: the model's nnx.Intermediate state).

    residual_rms [L + 1, B, T] (index 0: the embedding × multiplier, then after each layer),
    router_entropy [L, B, T] (entropy of the router softmax / log E), top_gates [L, B, T, k],
    attention_entropy [L, H] (per query head: entropy of a query's weights / log of its visible keys,
    averaged over the queries that see at least 2 keys), logits [B, T, V] and
    next_token_logprob [B, T - 1] (log-probability the model gives each actual next token).
    """
    import jax

    tokens = np.asarray(tokens)
    config = model.config
    logits = np.asarray(logits, np.float32)
    layers = recorded["decoder_layers"]
    count = len(model.decoder_layers)

    def value(i, *path):  # layer i's recording at path, as float64
        node = layers[i]
        for key in path:
            node = node[key]
        return np.asarray(node[...], np.float64)

    embedded = np.asarray(model.in_out_embed[...], np.float64)[tokens] * config.embedding_multiplier_scale
    residual = [np.sqrt(np.mean(embedded**2, axis=-1))] + [value(i, "residual_rms") for i in range(count)]
    router_logits = np.stack([value(i, "moe", "router_logits") for i in range(count)])  # [L, B, T, E]
    probs = np.asarray(jax.nn.softmax(router_logits, axis=-1), np.float64)
    router_entropy = -(probs * np.log(np.maximum(probs, 1e-30))).sum(-1) / np.log(config.num_experts)
    top_gates = -np.sort(-probs, axis=-1)[..., : config.num_selected_experts]

    weights = np.stack([value(i, "multi_head_attention", "attention_weights") for i in range(count)])
    l, b, kv, g, t, s = weights.shape
    weights = weights.reshape(l, b, kv * g, t, s)  # query head h = kv·G + g
    visible = np.arange(s)[None, :] <= np.arange(t)[:, None]  # causal, no padding: query i sees keys 0..i
    entropy = -(weights * np.log(np.maximum(weights, 1e-30))).sum(-1)  # [L, B, H, T]
    keys = visible.sum(-1)  # [T]
    normalised = entropy[..., keys >= 2] / np.log(keys[keys >= 2])
    log_probs = np.asarray(jax.nn.log_softmax(logits[:, :-1], axis=-1))
    next_logprob = np.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
    return {"residual_rms": np.stack(residual), "router_entropy": router_entropy, "top_gates": top_gates,
            "attention_entropy": normalised.mean(axis=(1, 3)), "logits": logits, "next_token_logprob": next_logprob}


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


# ==== 08 generation ==================================================================================


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
    ax.bar(x, base[order], color=np.where(kept, ORANGE, GREY), label="probability (orange: kept)")
    ax.plot(x, np.cumsum(base[order]), "s-", color=PURPLE, markersize=4, label="cumulative, likeliest first")
    ax.axhline(top_p, color=RED, linestyle="--", linewidth=1, label=f"top_p = {top_p:g}")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"top-p: the likeliest tokens until their total reaches {top_p:g}", fontsize=10)
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


# ==== 07 training ====================================================================================


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


# ==== 09 the real weights ============================================================================


def release_layers(config: GrokConfig) -> np.ndarray:
    """The decoder layer of each release file in file order (−1 for the embedding and the final norm): [files]."""
    from grok_mini.checkpoint import release_layout

    return np.array([t.param[1] if t.param[0] == "decoder_layers" else -1 for t in release_layout(config)])


@_styled
def plot_release_order(config: GrokConfig) -> Figure:
    """Which decoder layer each of the release's files holds: sorted as strings, layer 10 comes before layer 2."""
    layers = release_layers(config)
    files = np.arange(len(layers))
    fig, [[ax]] = _figure(width=8.0, height=4.0)
    ax.plot(files, np.arange(len(layers)) * config.num_layers / len(layers), ":", color=GREY,
            label="numeric order (what a naive loader assumes)")
    ax.scatter(files, layers, s=6, color=BLUE, label="the file's layer (string order of module names)")
    for layer, colour, rise in ((2, RED, 0.12), (10, ORANGE, 0.35)):
        first = int(np.argmax(layers == layer))
        ax.annotate(f"layer {layer}: files {first}–{first + int((layers == layer).sum()) - 1}",
                    (first, layer), xytext=(first + len(files) * 0.06, layer + config.num_layers * rise),
                    arrowprops={"arrowstyle": "->", "color": colour}, color=colour, fontsize=9)
    ax.set_xlabel("file number (tensorNNNNN_000)")
    ax.set_ylabel("decoder layer the file belongs to")
    ax.set_title(f"{len(files)} files: layers in the order 0, 1, 10, 11, …, 19, 2, 20, …", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return fig


@_styled
def plot_block_scales(weight: np.ndarray, scales: np.ndarray, *, name: str = "") -> Figure:
    """One int8 matrix of the release: its bfloat16 scales [blocks, out] and the distribution of its int8 values."""
    scales = np.asarray(scales, np.float32)
    fig, axes = _figure(ncols=2, width=11.0, height=3.6, gridspec_kw={"width_ratios": [3, 1.3]})
    ax = axes[0, 0]
    image = ax.imshow(scales, cmap="viridis", aspect="auto", interpolation="nearest")
    rows = weight.shape[-2] // scales.shape[-2]
    ax.set_yticks(range(scales.shape[0]), [f"rows {b * rows}–{(b + 1) * rows - 1}" for b in range(scales.shape[0])],
                  fontsize=7)
    ax.set_xlabel("output column")
    ax.set_ylabel("input block")
    ax.grid(False)
    fig.colorbar(image, ax=ax, shrink=0.9, label="scale (bfloat16)")
    ax.set_title(f"{name}: one scale per (input block, output column)", fontsize=10)
    ax = axes[0, 1]
    values = np.asarray(weight).reshape(-1).astype(np.int32)
    ax.hist(values, bins=np.arange(-128, 129, 4), color=BLUE)
    ax.set_xlabel("int8 value")
    ax.set_ylabel("count")
    ax.set_title(f"int8 values (max |w| = {np.abs(values).max()})", fontsize=10)
    fig.suptitle("int8 weights with block scales: w ≈ int8 × scale of its block and column", fontweight="bold")
    return fig


def sharding_map(array) -> np.ndarray:
    """Device id holding each element of a sharded jax.Array [..., rows, cols] (at index 0 of leading axes)."""
    shape = array.shape[-2:]
    owner = np.full(shape, -1)
    for shard in array.addressable_shards:
        index = shard.index[-2:]
        lead = shard.index[:-2]
        if all(s.start in (None, 0) for s in lead):  # the shard holding element 0 of the leading axes
            if (owner[index] == -1).all():
                owner[index] = shard.device.id
    return owner


def spec_map(shape: tuple[int, ...], spec, axis_sizes: dict[str, int]) -> np.ndarray:
    """The same map from a PartitionSpec alone, for a mesh of `axis_sizes` whose devices are numbered in
    (data, expert, model) order (as make_mesh lays out jax.devices()); no devices needed."""
    from grok_mini.sharding import AXES

    sizes = [axis_sizes.get(axis, 1) for axis in AXES]
    entries = list(spec) + [None] * (len(shape) - len(spec))
    owner = np.zeros(shape[-2:], int)
    for dim, axis in zip((0, 1), entries[-2:], strict=True):
        if axis is None:
            continue
        step = int(np.prod(sizes[AXES.index(axis) + 1:]))  # device-id stride of this axis
        position = np.arange(shape[-2:][dim]) // (shape[-2:][dim] // sizes[AXES.index(axis)])
        owner += np.expand_dims(position * step, 1 - dim)
    return owner


@_styled
def plot_sharding(maps: dict) -> Figure:
    """Which device holds which part of each matrix: {title: (owner map [rows, cols], shape, spec)}."""
    count = len(maps)
    fig, axes = _figure(ncols=count, width=3.3 * count + 1.0, height=3.6)
    cmap = matplotlib.colormaps["tab10"]
    for ax, (name, (owner, shape, spec)) in zip(axes[0], maps.items(), strict=True):
        ax.imshow(owner, cmap=cmap, vmin=-0.5, vmax=9.5, aspect="auto", interpolation="nearest")
        ax.set_title(f"{name}\n{list(shape)}, spec {tuple(spec)}", fontsize=8)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
        ax.grid(False)
        if len(np.unique(owner)) == 1:
            ax.text(owner.shape[1] / 2, owner.shape[0] / 2, "copied on\nevery device", ha="center",
                    va="center", color="white", fontweight="bold")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(8)]
    fig.legend(handles, [f"device {i}" for i in range(8)], loc="outside lower center", ncols=8, fontsize=8)
    fig.suptitle("Tensor parallelism over 8 devices: each colour is the part one device holds", fontweight="bold")
    return fig
