"""Notebook 09, the real weights: release file order, block scales, sharding maps.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from grok_mini.config import GrokConfig
from grok_mini.teach.style import BLUE, GREY, ORANGE, RED, _figure, _styled

__all__ = ["plot_block_scales", "plot_release_order", "plot_sharding", "release_layers", "sharding_map", "spec_map"]


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
