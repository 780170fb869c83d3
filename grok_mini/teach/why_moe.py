"""Notebook 12, why a mixture of experts: parameters, compute and decode bandwidth.

The helpers without a verb that draws compute what the notebook prints and plots, so the tests can
check them against independent computations:

- `dense_widening`, `arms`: the three toy arms of the stored runs (the MoE toy, a dense toy with its
  active parameters, a dense toy with its total parameters), as `grok_mini.explore.Experiment`s;
- `official_flops_per_token`: forward FLOPs a token of the xai-org/grok-1 formulation, which runs
  each of a token's k copies through all E experts and keeps one output by a one-hot select;
- `training_flops`, `arm_band`, `final_table`: what a stored sweep of the arms shows;
- `expert_bytes`, `decode_bytes_per_token`, `expected_experts_read`: the weights one decode step reads.

The plots (`plot_*`) return a matplotlib Figure whose title states the finding.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from grok_mini.config import GrokConfig, preset
from grok_mini.explore import Experiment, read_results
from grok_mini.teach.lab import final_losses
from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, RED, _figure, _human, _styled

__all__ = ["dense_widening", "arms", "ARM_NAMES", "official_flops_per_token", "training_flops", "arm_band",
           "final_table", "paired_gaps", "expert_bytes", "decode_bytes_per_token", "expected_experts_read",
           "plot_params_and_flops", "plot_arms", "plot_decode_bytes"]

ARM_NAMES = ("moe", "dense-active", "dense-total")
_COLOURS = {"moe": BLUE, "dense-active": ORANGE, "dense-total": GREEN}


# ==== the three arms ================================================================================


def dense_widening(config: GrokConfig, multiple: int) -> float:
    """The widening_factor that gives a single expert `multiple` times `config`'s expert width.

    GrokConfig.ffn_size is int(w · d) · 2 // 3 rounded up to a multiple of 8; w = 3 · m · f / (2 d)
    makes int(w · d) = 3 m f / 2 exactly (f is a multiple of 8, so m f is even), which gives m · f.
    """
    target = multiple * config.ffn_size
    widening = 3 * target / (2 * config.emb_size)
    got = dataclasses.replace(config, widening_factor=widening, num_experts=1, num_selected_experts=1).ffn_size
    if got != target:
        raise ValueError(f"widening_factor {widening} gives an FFN of {got}, not {target}")
    return widening


def arms(base: GrokConfig | None = None) -> tuple[Experiment, ...]:
    """The MoE toy and two dense toys: one expert as wide as the k chosen ones (equal active
    parameters), one as wide as all E (equal total parameters, up to the router's columns)."""
    base = preset("toy") if base is None else base
    e, k = base.num_experts, base.num_selected_experts
    dense = {"num_experts": 1, "num_selected_experts": 1}
    return (
        Experiment("moe", f"the toy's mixture: {e} experts of width {base.ffn_size}, top-{k}"),
        Experiment("dense-active", f"one expert of width {k} x {base.ffn_size}: the MoE's active parameters",
                   model=dict(dense, widening_factor=dense_widening(base, k))),
        Experiment("dense-total", f"one expert of width {e} x {base.ffn_size}: the MoE's total parameters",
                   model=dict(dense, widening_factor=dense_widening(base, e))),
    )


# ==== compute ========================================================================================


def official_flops_per_token(config: GrokConfig, context: int | None = None) -> int:
    """Forward FLOPs a token of the official formulation: GrokConfig.flops_per_token with the expert
    matmuls done for every (copy, expert) pair, k · E expert evaluations instead of k."""
    d, f, k, e = config.emb_size, config.ffn_size, config.num_selected_experts, config.num_experts
    one_expert = 2 * 3 * d * f  # gate, value and output matrices, 2 FLOPs a multiply-add
    return config.flops_per_token(context) + config.num_layers * (k * e - k) * one_expert


def training_flops(flops_per_token: float, step, tokens_per_step: int) -> np.ndarray:
    """Training FLOPs after `step` steps: forward FLOPs a token × 3 (the backward pass costs about
    twice the forward) × tokens a step × steps. Held-out evaluations are not counted."""
    return 3.0 * flops_per_token * tokens_per_step * np.asarray(step, np.float64)


# ==== the stored runs ================================================================================


def _runs(out) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "runs").glob("*.json"))]


def arm_band(out) -> dict[str, dict]:
    """{arm: {"step", "flops", "mean", "min", "max": arrays [evaluations], "seeds": n}}: held-out loss
    over seeds, with the training FLOPs at each evaluation (`training_flops`)."""
    rows = read_results(out)
    tokens = {run["experiment"]: run["train"]["batch_size"] * run["train"]["seq_len"] for run in _runs(out)}
    band = {}
    for name in dict.fromkeys(row["experiment"] for row in rows):
        by_step: dict[int, list[float]] = {}
        for row in rows:
            if row["experiment"] == name and row["heldout_loss"] is not None:
                by_step.setdefault(int(row["step"]), []).append(float(row["heldout_loss"]))
                flops_per_token = row["flops_per_token"]
        steps = np.asarray(sorted(by_step))
        values = [np.asarray(by_step[s]) for s in steps]
        band[name] = dict(step=steps, flops=training_flops(flops_per_token, steps, tokens[name]),
                          mean=np.asarray([v.mean() for v in values]), min=np.asarray([v.min() for v in values]),
                          max=np.asarray([v.max() for v in values]), seeds=len(values[-1]))
    return band


def final_table(out) -> list[dict]:
    """One dict per arm: the final held-out losses (per seed, mean, min, max), parameters, FLOPs a token."""
    table: dict[str, dict] = {}
    for row in final_losses(out):  # the lab's reading of a sweep: the last held-out loss per arm and seed
        entry = table.setdefault(row["experiment"], dict(
            arm=row["experiment"], losses=[], active_params=row["active_params"], total_params=row["total_params"],
            flops_per_token=row["flops_per_token"], step=row["step"]))
        entry["losses"].append(row["heldout_loss"])
    for entry in table.values():
        losses = entry["losses"]
        entry.update(mean=float(np.mean(losses)), min=min(losses), max=max(losses), seeds=len(losses))
    return list(table.values())


def paired_gaps(out, a: str, b: str) -> np.ndarray:
    """Final held-out loss of arm `a` minus arm `b`, seed by seed (same seed: same batches and held-out windows)."""
    table = {row["arm"]: row for row in final_table(out)}
    seeds = _seeds(out)
    return np.asarray(table[a]["losses"]) - np.asarray(table[b]["losses"]) if seeds[a] == seeds[b] else np.asarray([])


def _seeds(out) -> dict[str, list[int]]:
    last: dict[str, list[int]] = {}
    for row in read_results(out):
        if row["heldout_loss"] is not None and int(row["seed"]) not in last.setdefault(row["experiment"], []):
            last[row["experiment"]].append(int(row["seed"]))
    return last


def _overlap(table: dict, a: str, b: str) -> bool:
    return table[a]["min"] <= table[b]["max"] and table[b]["min"] <= table[a]["max"]


# ==== decode: the bytes a step reads ==================================================================


def expert_bytes(config: GrokConfig, fmt: str = "int8") -> int:
    """Bytes of one expert of one layer (its three matrices with their scales), from GrokConfig.weight_bytes:
    the model with one expert more, less the model, less that expert's router column (float32)."""
    more = dataclasses.replace(config, num_experts=config.num_experts + 1)
    return (more.weight_bytes(fmt) - config.weight_bytes(fmt)) // config.num_layers - 4 * config.emb_size


def decode_bytes_per_token(config: GrokConfig, fmt: str = "int8", experts: float | None = None) -> float:
    """Weight bytes one decode step reads at batch 1 with `experts` experts a layer read (default: the
    k chosen ones; E: all of them, what a batch large enough for every expert reads). Everything that
    is not an expert is read whole: attention, router, norms and the float32 embedding, which the tied
    output projection reads entirely. The KV cache is left out (it depends on the context)."""
    experts = config.num_selected_experts if experts is None else experts
    unused = config.num_experts - experts
    return config.weight_bytes(fmt) - config.num_layers * unused * expert_bytes(config, fmt)


def expected_experts_read(config: GrokConfig, batch: int) -> float:
    """Experts a layer reads in one decode step of `batch` tokens, each choosing k distinct experts
    uniformly at random: E · (1 − (1 − k/E)^batch), since one token misses a given expert with
    probability C(E−1, k) / C(E, k) = 1 − k/E."""
    e, k = config.num_experts, config.num_selected_experts
    return e * (1 - (math.comb(e - 1, k) / math.comb(e, k)) ** batch)


# ==== plots ==========================================================================================


@_styled
def plot_params_and_flops(config: GrokConfig) -> Figure:
    """Left: total and active parameters by component. Right: forward GFLOP a token, ours and the official."""
    counts = config.param_counts()
    share = config.num_selected_experts / config.num_experts
    parts = [("embedding", counts["embedding"]), ("attention", counts["attention"]),
             ("experts", counts["experts"]), ("router + norms", counts["router"] + counts["norms"])]
    colours = [GREY, ORANGE, BLUE, GREEN]
    fig, axes = _figure(ncols=2, width=11, height=4.2)
    ax = axes[0, 0]
    for x, scale in ((0, 1.0), (1, share)):
        bottom = 0.0
        for (name, count), colour in zip(parts, colours, strict=True):
            value = count * (scale if name == "experts" else 1.0) / 1e9
            ax.bar(x, value, bottom=bottom, color=colour, label=name if x == 0 else None, width=0.6)
            bottom += value
        ax.annotate(f"{bottom:.1f} B", (x, bottom), ha="center", va="bottom", fontsize=9)
    ax.set_xticks([0, 1], ["total", "active a token"])
    ax.set_ylabel("parameters (billions)")
    ax.legend(fontsize=8)
    ax.set_title(f"A token uses {config.num_active_params / config.num_params:.0%} of the parameters")
    ax = axes[0, 1]
    ours, official = config.flops_per_token(), official_flops_per_token(config)
    for x, value, colour in ((0, ours, BLUE), (1, official, RED)):
        ax.bar(x, value / 1e9, color=colour, width=0.6)
        ax.annotate(f"{value / 1e9:.0f} GFLOP", (x, value / 1e9), ha="center", va="bottom", fontsize=9)
    ax.set_xticks([0, 1], [f"top-{config.num_selected_experts} experts only",
                           f"official: every copy × all {config.num_experts}"])
    ax.set_ylabel("forward GFLOP a token")
    ax.set_title(f"The official formulation does {official / ours:.1f}x the forward FLOPs")
    fig.suptitle("Parameters are paid for in memory; only the active ones in compute", fontweight="bold")
    return fig


@_styled
def plot_arms(out) -> Figure:
    """Held-out loss (mean over seeds, the seeds' range shaded) against step and against training FLOPs."""
    band = arm_band(out)
    table = {row["arm"]: row for row in final_table(out)}
    fig, axes = _figure(ncols=2, width=11.5, height=4.4, sharey=True)
    for ax, key, label in zip(axes[0], ("step", "flops"), ("optimiser step", "training FLOPs (3 × forward)"),
                              strict=True):
        for name, b in band.items():
            row = table[name]
            ax.plot(b[key], b["mean"], color=_COLOURS.get(name, GREY), linewidth=2,
                    label=f"{name}: {_human(row['total_params'])} total, {_human(row['active_params'])} active")
            ax.fill_between(b[key], b["min"], b["max"], color=_COLOURS.get(name, GREY), alpha=0.2, linewidth=0)
        ax.set_xlabel(label)
        ax.set_ylim(top=min(ax.get_ylim()[1], 7.0))  # step 0 (≈7.7 for all) would flatten the rest
    axes[0, 1].xaxis.set_major_formatter(lambda value, _: _human(value))
    axes[0, 0].set_ylabel("held-out loss (nats per token)")
    axes[0, 0].legend(fontsize=8, title=f"{next(iter(band.values()))['seeds']} seeds each", title_fontsize=8)
    best = min(table, key=lambda name: table[name]["mean"])
    others = [name for name in table if name != best]
    every = all(len(gaps := paired_gaps(out, best, name)) and np.all(gaps < 0) for name in others)
    title = f"{best} ends lowest {'on every seed' if every else 'on average'}"
    if len(others) == 2 and _overlap(table, *others):
        title += f";\n{others[0]} and {others[1]} overlap"
    axes[0, 0].set_title(title)
    if "moe" in band and best != "moe":
        at = float(np.interp(band["moe"]["flops"][-1], band[best]["flops"], band[best]["mean"]))
        axes[0, 1].set_title(f"At moe's final training FLOPs, {best}'s curve\nis at {at:.2f} nats, "
                             f"moe's at {table['moe']['mean']:.2f}")
    fig.suptitle("Same tokens, steps and seeds: the MoE against dense toys of its active and total size",
                 fontweight="bold")
    return fig


@_styled
def plot_decode_bytes(config: GrokConfig, bandwidth: float, *, layers: tuple[int, ...] = (8, 64),
                      fmt: str = "int8") -> Figure:
    """Weight bytes a decode step reads and its lower-bound time at `bandwidth` (bytes/s): the chosen
    experts (batch 1) against every expert (a large batch), for models of `layers` layers."""
    fig, [[ax]] = _figure(width=8.5, height=4.2)
    width = 0.38
    for i, n in enumerate(layers):
        model = dataclasses.replace(config, num_layers=n)
        used = decode_bytes_per_token(model, fmt)
        every = decode_bytes_per_token(model, fmt, experts=model.num_experts)
        for dx, value, colour, label in ((-width / 2, used, BLUE, f"batch 1: {model.num_selected_experts} experts "
                                          "a layer"),
                                         (width / 2, every, RED, f"large batch: all {model.num_experts}")):
            ax.bar(i + dx, value / 1e9, width, color=colour, label=label if i == 0 else None)
            ax.annotate(f"{value / 1e9:.1f} GB\n≥ {value / bandwidth * 1e3:.1f} ms", (i + dx, value / 1e9),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(layers)), [f"{n} layers" for n in layers])
    ax.set_ylabel(f"weight GB read a decode step ({fmt})")
    ax.margins(y=0.2)
    ax.legend(fontsize=8, loc="upper left")
    model = dataclasses.replace(config, num_layers=layers[0])
    ratio = decode_bytes_per_token(model, fmt, experts=model.num_experts) / decode_bytes_per_token(model, fmt)
    ax.set_title(f"At batch 1 a token reads {1 / ratio:.0%} of the weights ({layers[0]} layers): "
                 f"{ratio:.1f}x less time at the bound")
    return fig
