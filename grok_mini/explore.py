"""Sweeps of architecture variants: change one of Grok-1's design choices, train, compare.

Every experiment trains the toy Grok on the same tokens (one tokenizer for the sweep, trained once),
with the same seeds and the same schedule; only its own changes differ: GrokConfig fields (experts,
experts per token, key/value heads), `config.Variant` switches (router, norms, cap, RoPE,
activation, capacity) or training settings (balance and z-loss coefficients). A finished run
writes `runs/<name>-seed<k>.json` and is never redone, so an interrupted sweep resumes where it
stopped. `run_sweep` returns, and writes beside the runs, a tidy table: one row per (experiment,
seed, step), plus `expert_load.csv` (one row per experiment, seed, step, layer, expert).

    grok-mini explore                      # the default sweep: 8 experiments × 2 seeds
    grok-mini explore --only grok-1 top-1  # some of them
    grok-mini explore --list               # what each one changes
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from grok_mini.config import ConfigError, GrokConfig, preset
from grok_mini.data import load_corpus
from grok_mini.tokenizer import load_tokenizer, train_tokenizer
from grok_mini.train import TrainConfig, Trainer

__all__ = ["Experiment", "DEFAULT_SWEEP", "SWEEP_TRAINING", "run_sweep", "read_results", "describe", "TABLE_COLUMNS"]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One design choice changed: `model` GrokConfig fields, `variant` switches, `train` settings."""

    name: str
    what: str  # one line for tables and plots
    model: dict = dataclasses.field(default_factory=dict)
    variant: dict = dataclasses.field(default_factory=dict)
    train: dict = dataclasses.field(default_factory=dict)

    def configs(self, base: GrokConfig, training: TrainConfig, seed: int) -> tuple[GrokConfig, TrainConfig]:
        """The model and training configs of this experiment; a ConfigError names the experiment."""
        try:
            variant = dataclasses.replace(base.variant, **self.variant)
            model = dataclasses.replace(base, **self.model, variant=variant)
            return model, dataclasses.replace(training, **self.train, seed=seed)
        except (ConfigError, ValueError, TypeError) as error:
            raise ConfigError(f"experiment {self.name!r}: {error}") from None


DEFAULT_SWEEP: tuple[Experiment, ...] = (
    Experiment("grok-1", "Grok-1's choices: 8 experts, top-2 raw gates, four norms, 30·tanh cap"),
    Experiment("top-1", "one expert a token (Switch): half the expert FLOPs", model={"num_selected_experts": 1}),
    Experiment("dense", "no mixture: one expert of the same width",
               model={"num_experts": 1, "num_selected_experts": 1}),
    Experiment("renormalized", "top-2 gates divided by their sum (Mixtral)", variant={"renormalize": True}),
    Experiment("no post-MoE norm", "rms_norm_3 left out", variant={"drop_norms": ("rms_norm_3",)}),
    Experiment("no cap", "attention logits not capped by 30·tanh", variant={"logit_cap": float("inf")}),
    Experiment("MQA", "one key/value head for all query heads", model={"num_kv_heads": 1}),
    Experiment("no balance loss", "load-balancing loss off", train={"balance_coef": 0.0}),
)
# Short enough that 8 experiments × 2 seeds fit in 10 minutes on a 2-core CPU; long enough that
# the held-out losses separate (from ~7.7 at step 0).
SWEEP_TRAINING = TrainConfig(steps=100, batch_size=8, seq_len=64, warmup_steps=10, eval_every=10, eval_windows=16)
TABLE_COLUMNS = ("experiment", "seed", "step", "loss", "heldout_loss", "balance", "z", "wall_s", "active_params",
                 "total_params", "flops_per_token")


def _write_atomically(path: Path, text: str) -> None:
    """Write into a temporary file beside `path`, then rename: a killed sweep leaves no half-written run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _run_file(out: Path, experiment: Experiment, seed: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment.name)
    return out / "runs" / f"{safe}-seed{seed}.json"


def _train_one(experiment: Experiment, seed: int, base: GrokConfig, training: TrainConfig, tokens,
               on_step: Callable[[], None]) -> dict:
    model_config, train_config = experiment.configs(base, training, seed)
    start = time.perf_counter()
    trainer = Trainer(model_config, train_config, *tokens)
    trainer.run(progress=False, on_step=lambda *_: on_step())
    history = trainer.history
    return dict(experiment=experiment.name, what=experiment.what, seed=seed, model=model_config.to_dict(),
                train=dataclasses.asdict(train_config), history=history, wall_s=time.perf_counter() - start,
                active_params=model_config.num_active_params, total_params=model_config.num_params,
                flops_per_token=model_config.flops_per_token(train_config.seq_len))


def _sweep_tokens(out: Path, base: GrokConfig, corpus) -> tuple[np.ndarray, np.ndarray]:
    """The training and held-out tokens every run shares: one tokenizer, trained once and kept."""
    train_text, heldout_text = load_corpus(corpus).split()
    path = out / "tokenizer.model"
    if path.exists():
        tokenizer = load_tokenizer(path)
        if tokenizer.vocab_size != base.vocab_size:
            raise ConfigError(f"{path}: {tokenizer.vocab_size} pieces, but the sweep's model has vocab_size="
                              f"{base.vocab_size}; use another --out")
    else:
        tokenizer = train_tokenizer(train_text.splitlines(), base.vocab_size)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(path)
    return (np.asarray(tokenizer.encode(train_text), np.int32), np.asarray(tokenizer.encode(heldout_text), np.int32))


def run_sweep(out: str | Path, experiments: Sequence[Experiment] = DEFAULT_SWEEP, seeds: Sequence[int] = (0, 1), *,
              base: GrokConfig | None = None, training: TrainConfig = SWEEP_TRAINING, corpus=None,
              progress: bool = True) -> list[dict]:
    """Train every (experiment, seed) not already in `out`, then write and return the tidy table.

    All configs are built (and so checked) before the first step; runs already finished in `out`
    are read back, not redone.
    """
    out = Path(out)
    base = preset("toy") if base is None else base
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"experiment names must be distinct, got {names}")
    for experiment in experiments:  # every config checked before any training
        for seed in seeds:
            experiment.configs(base, training, seed)
    todo = [(e, s) for e in experiments for s in seeds if not _run_file(out, e, s).exists()]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo) * training.steps, desc=f"sweep: {len(todo)} runs", unit="step", dynamic_ncols=True)
    if todo:
        tokens = _sweep_tokens(out, base, corpus)
        for experiment, seed in todo:
            if bar is not None:
                bar.set_postfix_str(f"{experiment.name} seed {seed}")
            result = _train_one(experiment, seed, base, training, tokens, on_step=bar.update if bar else lambda: None)
            _write_atomically(_run_file(out, experiment, seed), json.dumps(result))
    if bar is not None:
        bar.close()
    results = [json.loads(_run_file(out, e, s).read_text()) for e in experiments for s in seeds]
    _write_tables(out, results)
    return results


def _rows(result: dict) -> list[dict]:
    history = result["history"]
    heldout = dict(zip(history["heldout_step"], history["heldout_loss"], strict=True))
    per_step = result["wall_s"] / max(len(history["step"]), 1)
    shared = {k: result[k] for k in ("experiment", "seed", "active_params", "total_params", "flops_per_token")}
    rows = [dict(shared, step=step, loss=loss, heldout_loss=heldout.get(step), balance=balance, z=z,
                 wall_s=round(per_step * (i + 1), 3))
            for i, (step, loss, balance, z) in enumerate(zip(history["step"], history["loss"], history["balance"],
                                                               history["z"], strict=True))]
    last = max(heldout)
    if last not in history["step"]:  # the final evaluation, after the last step
        rows.append(dict(shared, step=last, loss=None, heldout_loss=heldout[last], balance=None, z=None,
                         wall_s=round(result["wall_s"], 3)))
    return rows


def _write_tables(out: Path, results: list[dict]) -> None:
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, TABLE_COLUMNS)
        writer.writeheader()
        for result in results:
            writer.writerows(_rows(result))
    with open(out / "expert_load.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["experiment", "seed", "step", "layer", "expert", "share"])
        for result in results:
            for step, load in zip(result["history"]["step"], result["history"]["expert_load"], strict=True):
                for layer, shares in enumerate(load):
                    writer.writerows([result["experiment"], result["seed"], step, layer, e, share]
                                     for e, share in enumerate(shares))


def read_results(out: str | Path) -> list[dict]:
    """The rows of a sweep's results.csv, numbers as numbers (empty cells as None)."""
    def number(text: str):
        if text == "":
            return None
        value = float(text)
        return int(value) if value.is_integer() and "." not in text else value

    with open(Path(out) / "results.csv", newline="", encoding="utf-8") as file:
        return [{k: (v if k == "experiment" else number(v)) for k, v in row.items()} for row in csv.DictReader(file)]


def describe(experiments: Sequence[Experiment] = DEFAULT_SWEEP, base: GrokConfig | None = None) -> str:
    """A table of the experiments: what each changes, its active/total parameters and FLOPs a token."""
    base = preset("toy") if base is None else base
    lines = [f"{'experiment':<18}{'active':>11}{'total':>11}{'MFLOP/tok':>11}  what"]
    for experiment in experiments:
        model, train = experiment.configs(base, SWEEP_TRAINING, 0)
        lines.append(f"{experiment.name:<18}{model.num_active_params:>11,}{model.num_params:>11,}"
                     f"{model.flops_per_token(train.seq_len) / 1e6:>11.2f}  {experiment.what}")
    return "\n".join(lines)
