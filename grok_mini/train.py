"""Training a toy Grok: next-token cross-entropy + the Switch load-balancing loss + the router z-loss.

The model is the same `Grok` class as the 314B release, with a small config. One optimiser step
(forward, backward, AdamW with warmup then cosine decay) is one compiled function. A run folder
holds everything needed to continue or to sample:

    run/config.json        the GrokConfig           run/train_config.json   the TrainConfig
    run/tokenizer.model    the SentencePiece model  run/corpus.json          what was trained on
    run/checkpoints/<step> Orbax: parameters, optimiser state, step, data position, history
    run/history.json       losses, held-out losses and expert load so far (for plots)

Batches depend only on (seed, step) (`data.sample_windows`), so a run resumed from a checkpoint
continues the exact loss trajectory of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import time
import types
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from grok_mini.config import GrokConfig, is_int, is_number, preset, shown
from grok_mini.data import heldout_windows, load_corpus, sample_windows
from grok_mini.files import read_json
from grok_mini.memory import require_memory
from grok_mini.model import Grok, recording
from grok_mini.tokenizer import Tokenizer, load_tokenizer, train_tokenizer

__all__ = ["TrainConfig", "Trainer", "prepare_run", "balance_loss", "router_z_loss", "expert_load",
           "router_losses", "make_optimizer", "latest_checkpoint_step", "load_trained_model"]


MAX_COUNT = 1 << 31  # steps, windows, tokens: far beyond a toy run, and still a C int
MAX_SEED = (1 << 63) - 1  # jax.random.key takes a signed 64-bit seed


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are the `grok-mini demo` settings for the toy preset on a laptop CPU."""

    steps: int = 120  # total optimiser steps (the learning-rate schedule spans them)
    batch_size: int = 8
    seq_len: int = 128  # tokens a window; at most the model's sequence_len
    learning_rate: float = 1e-2  # peak, reached after warmup (high: the toy is tiny and the run short)
    warmup_steps: int = 12
    final_lr_fraction: float = 0.1  # cosine decays to learning_rate × this
    weight_decay: float = 0.1  # AdamW, on matrices only (not norm scales)
    b1: float = 0.9
    b2: float = 0.95
    grad_clip: float = 1.0  # global-norm clipping
    balance_coef: float = 1e-2  # Switch Transformer α; 0 turns the load-balancing loss off
    z_coef: float = 1e-3  # ST-MoE router z-loss c_z; 0 turns it off
    eval_every: int = 20  # held-out loss every this many steps (and at the first and last)
    eval_windows: int = 16  # held-out windows of seq_len tokens
    checkpoint_every: int = 0  # 0: only at the end of a run
    seed: int = 0  # model initialisation and batch order

    def __post_init__(self):
        def need(ok: bool, message: str):
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

        for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_windows"):
            value = getattr(self, name)
            need(is_int(value) and 1 <= value <= MAX_COUNT, f"{name} must be an integer from 1 to {MAX_COUNT:,}, "
                 f"got {shown(value)}")
        for name in ("warmup_steps", "checkpoint_every"):
            value = getattr(self, name)
            need(is_int(value) and 0 <= value <= MAX_COUNT, f"{name} must be an integer from 0 to {MAX_COUNT:,}, "
                 f"got {shown(value)}")
        need(is_int(self.seed) and 0 <= self.seed <= MAX_SEED,
             f"seed must be an integer from 0 to {MAX_SEED:,} (2**63 - 1), got {shown(self.seed)}")
        for name in ("learning_rate", "weight_decay", "grad_clip", "balance_coef", "z_coef", "final_lr_fraction"):
            value = getattr(self, name)
            need(is_number(value) and math.isfinite(value) and value >= 0,
                 f"{name} must be a finite number ≥ 0, got {shown(value)}")
        for name in ("b1", "b2"):
            value = getattr(self, name)
            need(is_number(value) and 0 <= value < 1, f"{name} must be a number in [0, 1), got {shown(value)}")
        need(self.learning_rate > 0, "learning_rate must be > 0")

    @classmethod
    def from_dict(cls, values, *, source: str = "train config") -> TrainConfig:
        """A TrainConfig from a saved run's fields: all of them, nothing else (a damaged file is an error)."""
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a JSON object of training settings, got {type(values).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        if unknown := sorted(set(values) - names):
            raise ValueError(f"{source}: unknown training settings {unknown}")
        if missing := sorted(names - set(values)):
            raise ValueError(f"{source}: missing training settings {missing}")
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


# ---- the two router losses ----------------------------------------------------------------------

def expert_load(router_logits: jax.Array, num_selected: int, mask: jax.Array | None = None) -> jax.Array:
    """f [E]: the fraction of the (token, slot) assignments each expert receives; Σ f = 1.

    router_logits [..., E]; mask [...] (True = real token) leaves padding out.
    """
    num_experts = router_logits.shape[-1]
    _, chosen = jax.lax.top_k(router_logits.astype(jnp.float32), num_selected)  # same order as softmax probs
    assigned = jax.nn.one_hot(chosen, num_experts).sum(-2)  # [..., E] 0/1: chosen or not
    weight = jnp.ones(assigned.shape[:-1]) if mask is None else mask.astype(jnp.float32)
    counts = jnp.einsum("...e,...->e", assigned, weight)
    return counts / (num_selected * jnp.maximum(weight.sum(), 1.0))


def balance_loss(router_logits: jax.Array, num_selected: int, mask: jax.Array | None = None) -> jax.Array:
    """Switch Transformer load-balancing loss of one MoE layer: E · Σᵢ fᵢ · Pᵢ.

    fᵢ = share of the top-k assignments going to expert i (divided by k, so Σ f = 1; no gradient),
    Pᵢ = mean router probability of expert i (carries the gradient). Balanced routing (f = P = 1/E)
    gives 1, the minimum whenever P follows f (E·Σ fᵢ² ≥ (Σ fᵢ)² = 1 by Cauchy-Schwarz); all
    tokens sent to the same k experts with certainty gives E / k.
    """
    num_experts = router_logits.shape[-1]
    f = jax.lax.stop_gradient(expert_load(router_logits, num_selected, mask))
    probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)  # [..., E]
    weight = jnp.ones(probs.shape[:-1]) if mask is None else mask.astype(jnp.float32)
    mean_probs = jnp.einsum("...e,...->e", probs, weight) / jnp.maximum(weight.sum(), 1.0)
    return num_experts * jnp.sum(f * mean_probs)


def router_z_loss(router_logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """ST-MoE router z-loss of one layer: mean over tokens of (log Σⱼ exp zⱼ)², small when logits stay small."""
    z = jax.nn.logsumexp(router_logits.astype(jnp.float32), axis=-1) ** 2  # [...]
    weight = jnp.ones(z.shape) if mask is None else mask.astype(jnp.float32)
    return jnp.sum(z * weight) / jnp.maximum(weight.sum(), 1.0)


def router_losses(intermediates: nnx.State, num_selected: int, mask: jax.Array | None = None):
    """Per-layer (balance [L], z [L], load [L, E]) from the `router_logits` a forward pass recorded."""
    logits = [variable.get_value() for path, variable in nnx.to_flat_state(intermediates) if "router_logits" in path]
    if not logits:
        raise ValueError("no router_logits were recorded: run the model inside grok_mini.recording(model, router=True)")
    balance = jnp.stack([balance_loss(z, num_selected, mask) for z in logits])
    z_loss = jnp.stack([router_z_loss(z, mask) for z in logits])
    load = jnp.stack([expert_load(z, num_selected, mask) for z in logits])
    return balance, z_loss, load


# ---- optimiser and one step ------------------------------------------------------------------

def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Clip the global gradient norm, then AdamW with linear warmup and cosine decay."""
    fields = ("steps", "learning_rate", "warmup_steps", "final_lr_fraction", "weight_decay", "b1", "b2", "grad_clip")
    return _optimizer(**{name: getattr(config, name) for name in fields})


@functools.lru_cache(maxsize=16)
def _optimizer(**settings) -> optax.GradientTransformation:
    # One object for equal settings: the optimizer is part of what nnx.jit compiles for, so a new
    # but equal one would compile the training step again.
    config = types.SimpleNamespace(**settings)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
        decay_steps=max(config.steps, config.warmup_steps + 1),
        end_value=config.learning_rate * config.final_lr_fraction)
    decay_matrices = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip) if config.grad_clip > 0 else optax.identity(),
        optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay, mask=decay_matrices))


def _loss(model: Grok, batch: jax.Array, balance_coef: float, z_coef: float):
    """Total loss and metrics for a [B, T+1] batch of windows."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs).astype(jnp.float32)  # [B, T, V]
    recorded = nnx.pop(model, nnx.Intermediate)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    mask = inputs != model.config.pad_token
    balance, z_loss, load = router_losses(recorded, model.config.num_selected_experts, mask)
    total = ce + balance_coef * balance.mean() + z_coef * z_loss.mean()
    return total, dict(loss=total, ce=ce, balance=balance.mean(), z=z_loss.mean(), expert_load=load)


@nnx.jit
def _train_step(model: Grok, optimizer: nnx.Optimizer, batch, balance_coef: float, z_coef: float):
    grads_fn = nnx.value_and_grad(_loss, has_aux=True)
    (_, metrics), grads = grads_fn(model, batch, balance_coef, z_coef)
    optimizer.update(model, grads)
    return metrics


@nnx.jit
def _heldout_loss(model: Grok, windows) -> jax.Array:
    logits = model(windows[:, :-1]).astype(jnp.float32)
    nnx.pop(model, nnx.Intermediate)  # keep no recordings on the model
    return optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:]).mean()


# ---- the trainer --------------------------------------------------------------------------------

def _fingerprint(tokens: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tokens, np.int32).tobytes()).hexdigest()[:16]


def _empty_history() -> dict:
    return dict(step=[], loss=[], ce=[], balance=[], z=[], expert_load=[], heldout_step=[], heldout_loss=[])


class Trainer:
    """A model, its optimiser and the data, stepping through `config.steps` optimiser steps.

    `history` holds one entry a step (loss, ce, balance, z, expert_load [L][E]) and the held-out
    losses; `run(until)` trains to a step; `save(run_dir)` / `Trainer.restore(run_dir, ...)` make
    a checkpoint and continue from it.
    """

    def __init__(self, model_config: GrokConfig, config: TrainConfig, train_tokens, heldout_tokens, *,
                 dtype=jnp.float32):
        if config.seq_len > model_config.sequence_len:
            raise ValueError(f"seq_len={config.seq_len} exceeds the model's sequence_len={model_config.sequence_len}")
        _training_memory(model_config, "Trainer")
        self.model_config, self.config, self.dtype = model_config, config, dtype
        self.train_tokens = np.asarray(train_tokens, np.int32)
        self.heldout = heldout_windows(np.asarray(heldout_tokens, np.int32), config.seq_len, config.eval_windows)
        for name, tokens in (("training", self.train_tokens), ("held-out", self.heldout)):
            if tokens.size and (tokens.min() < 0 or tokens.max() >= model_config.vocab_size):
                raise ValueError(f"the {name} tokens have ids outside [0, {model_config.vocab_size}): "
                                 "does the tokenizer's vocabulary match the model's vocab_size?")
        sample_windows(self.train_tokens, 1, config.seq_len, seed=0, step=0)  # fails early if the text is too short
        self.model = Grok(model_config, dtype=dtype, rngs=nnx.Rngs(config.seed))
        self.optimizer = nnx.Optimizer(self.model, make_optimizer(config), wrt=nnx.Param)
        self.step = 0
        self.history = _empty_history()
        self.seconds = 0.0  # wall time in optimiser steps, compilation excluded
        self.timed_tokens = 0
        self._compiled = False  # this trainer's first step may compile: it is not timed

    @property
    def data_fingerprint(self) -> str:
        return _fingerprint(self.train_tokens)

    @property
    def tokens_per_second(self) -> float:
        return self.timed_tokens / self.seconds if self.seconds else float("nan")

    def batch(self, step: int) -> np.ndarray:
        return sample_windows(self.train_tokens, self.config.batch_size, self.config.seq_len,
                              seed=self.config.seed, step=step)

    def evaluate(self) -> float:
        """Mean cross-entropy (nats/token) on the fixed held-out windows, recorded in the history."""
        loss = float(_heldout_loss(self.model, jnp.asarray(self.heldout)))
        if not self.history["heldout_step"] or self.history["heldout_step"][-1] != self.step:
            self.history["heldout_step"].append(self.step)
            self.history["heldout_loss"].append(loss)
        return loss

    def train_step(self) -> dict:
        """One optimiser step on the batch of the current step; returns its metrics as Python numbers."""
        start = time.perf_counter()
        coefs = jnp.float32(self.config.balance_coef), jnp.float32(self.config.z_coef)  # traced: no recompiles
        with recording(self.model, router=True):  # the router losses need the logits of every layer
            metrics = _train_step(self.model, self.optimizer, jnp.asarray(self.batch(self.step)), *coefs)
        metrics = jax.device_get(metrics)
        if self._compiled:
            self.seconds += time.perf_counter() - start
            self.timed_tokens += self.config.tokens_per_step
        self._compiled = True
        entry = {key: float(metrics[key]) for key in ("loss", "ce", "balance", "z")}
        for key, value in entry.items():
            self.history[key].append(value)
        self.history["expert_load"].append(np.round(np.asarray(metrics["expert_load"]), 5).tolist())
        self.history["step"].append(self.step)
        self.step += 1
        return entry

    def run(self, until: int | None = None, *, run_dir: str | Path | None = None, progress: bool = True,
            on_step: Callable[[Trainer, dict], None] | None = None) -> Trainer:
        """Train up to step `until` (default: config.steps), evaluating and checkpointing on the way."""
        if until is not None and not (is_int(until) and until >= 1):
            raise ValueError(f"until must be a step ≥ 1 (at most steps={self.config.steps}), got {shown(until)}")
        until = self.config.steps if until is None else min(until, self.config.steps)
        bar = None
        if progress and until > self.step:
            from tqdm.auto import tqdm
            bar = tqdm(total=until, initial=self.step, desc="training", unit="step", dynamic_ncols=True)
        first_timed = self.step
        while self.step < until:
            if self.step % self.config.eval_every == 0:
                self.evaluate()
            entry = self.train_step()
            if on_step is not None:
                on_step(self, entry)
            if bar is not None:
                postfix = dict(loss=f"{entry['loss']:.3f}")
                if self.history["heldout_loss"]:
                    postfix["held-out"] = f"{self.history['heldout_loss'][-1]:.3f}"
                if self.step - first_timed > 1:
                    postfix["tok/s"] = f"{self.tokens_per_second:,.0f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
            every = self.config.checkpoint_every
            if run_dir is not None and every and self.step % every == 0 and self.step < until:
                self.save(run_dir)
        if self.step == self.config.steps:
            self.evaluate()
        if bar is not None:
            bar.close()
        if run_dir is not None:
            self.save(run_dir)
        return self

    # ---- checkpoints ----------------------------------------------------------------------------

    def save(self, run_dir: str | Path) -> Path:
        """Write an Orbax checkpoint of this step under run_dir/checkpoints, plus the run's JSON files.

        Three items: params (the model), optimizer (AdamW moments and step count), meta (step, seed,
        data position, a fingerprint of the training tokens, the history so far).
        """
        import orbax.checkpoint as ocp

        run_dir = Path(run_dir).absolute()
        write_run_files(run_dir, self.model_config, self.config)
        meta = dict(step=self.step, seed=self.config.seed, data_position=self.step,
                    data_fingerprint=self.data_fingerprint, history=self.history)
        items = dict(params=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(self.model, nnx.Param))),
                     optimizer=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(self.optimizer))),
                     meta=ocp.args.JsonSave(meta))
        with _manager(run_dir) as manager:
            manager.save(self.step, args=ocp.args.Composite(**items), force=True)
            manager.wait_until_finished()
        (run_dir / "history.json").write_text(json.dumps(self.history))
        return run_dir / "checkpoints" / str(self.step)

    @classmethod
    def restore(cls, run_dir: str | Path, train_tokens, heldout_tokens, *, step: int | None = None,
                config: TrainConfig | None = None) -> Trainer:
        """The trainer saved in run_dir (its latest step, or `step`), ready to continue.

        `config` may change `steps` from the saved run's (the schedule then spans the new total).
        """
        import orbax.checkpoint as ocp

        run_dir = Path(run_dir).absolute()
        model_config, saved_config = read_run_files(run_dir)
        step = latest_checkpoint_step(run_dir) if step is None else step
        trainer = cls(model_config, config or saved_config, train_tokens, heldout_tokens)
        items = dict(params=ocp.args.StandardRestore(_abstract(nnx.state(trainer.model, nnx.Param))),
                     optimizer=ocp.args.StandardRestore(_abstract(nnx.state(trainer.optimizer))),
                     meta=ocp.args.JsonRestore())
        with _restoring(run_dir, step), _manager(run_dir) as manager:
            restored = manager.restore(step, args=ocp.args.Composite(**items))
        meta = restored["meta"]
        if not (isinstance(meta, dict) and isinstance(meta.get("step"), int) and isinstance(meta.get("history"), dict)
                and isinstance(meta.get("data_fingerprint"), str)):
            raise OSError(f"{run_dir / 'checkpoints' / str(step)}: its meta item is damaged (expected step, "
                          "data_fingerprint and history)")
        if meta["data_fingerprint"] != trainer.data_fingerprint:
            raise ValueError(f"{run_dir}: the training text differs from the one this run was trained on "
                             "(another corpus or tokenizer?); resume needs the same data")
        _update(trainer.model, nnx.Param, restored["params"])
        _update(trainer.optimizer, ..., restored["optimizer"])
        trainer.step = int(meta["step"])
        trainer.history = {key: list(meta["history"].get(key, [])) for key in _empty_history()}
        return trainer


def _abstract(state: nnx.State) -> dict:
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)),
                                  nnx.to_pure_dict(state))


def _update(obj, wanted, pure: dict) -> None:
    state = nnx.state(obj, wanted)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(obj, state)


@contextlib.contextmanager
def _restoring(run_dir: Path, step: int):
    """Orbax reports a damaged checkpoint with many exception types; make them one OSError naming it."""
    try:
        yield
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:
        raise OSError(f"{run_dir / 'checkpoints' / str(step)}: cannot restore this checkpoint "
                      f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error


def _manager(run_dir: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager(run_dir / "checkpoints", options=options)


def latest_checkpoint_step(run_dir: str | Path) -> int:
    """The highest step saved under run_dir/checkpoints, or an OSError saying there is none."""
    folder = Path(run_dir) / "checkpoints"
    steps = sorted(int(p.name) for p in folder.glob("*") if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []
    if not steps:
        raise OSError(f"{run_dir}: no training checkpoint here (expected checkpoints/<step>/ "
                      "written by `grok-mini train` or `grok-mini demo`)")
    return steps[-1]


def write_run_files(run_dir: Path, model_config: GrokConfig, config: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(model_config.to_dict(), indent=1))
    (run_dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))


def read_run_files(run_dir: str | Path) -> tuple[GrokConfig, TrainConfig]:
    """The model config and the training settings of a run folder; a damaged one names its file."""
    run_dir = Path(run_dir)
    model_config = GrokConfig.from_json(run_dir / "config.json")
    path = run_dir / "train_config.json"
    return model_config, TrainConfig.from_dict(read_json(path, "the training settings"), source=str(path))


def _saved_corpus_path(run_dir: Path) -> str | None:
    """The corpus path recorded in run_dir/corpus.json (None: the embedded corpus, or no record)."""
    path = run_dir / "corpus.json"
    if not path.exists():
        return None
    values = read_json(path, "the run's corpus record")
    corpus = values.get("path") if isinstance(values, dict) else 0
    if corpus is not None and not isinstance(corpus, str):
        raise OSError(f"{path}: expected an object whose \"path\" is a string or null")
    return corpus


def _training_memory(model_config: GrokConfig, where: str) -> None:
    """Training holds float32 parameters, gradients and two AdamW moments: four copies of the weights."""
    require_memory(4 * model_config.weight_bytes("fp32"),
                   f"{where}: training the model ({model_config.num_params:,} parameters)")


def load_trained_model(run_dir: str | Path, *, step: int | None = None, dtype=jnp.float32) -> Grok:
    """The model of a training run folder (its latest checkpoint, or `step`); parameters only."""
    import orbax.checkpoint as ocp

    run_dir = Path(run_dir).absolute()
    model_config, _ = read_run_files(run_dir)
    step = latest_checkpoint_step(run_dir) if step is None else step
    require_memory(model_config.weight_bytes("fp32"), f"{run_dir}: the model ({model_config.num_params:,} parameters)")
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Grok(model_config, dtype=dtype)), nnx.Param)
    with _restoring(run_dir, step), _manager(run_dir) as manager:
        restored = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(params))))
    nnx.replace_by_pure_dict(params, restored["params"])
    return nnx.merge(graphdef, params)


# ---- a run folder from a corpus ----------------------------------------------------------------

def prepare_run(run_dir: str | Path, *, corpus: str | Path | None = None, model_config: GrokConfig | None = None,
                config: TrainConfig | None = None, resume: bool = False, replace: bool = False,
                log: Callable[[str], None] = print) -> tuple[Trainer, Tokenizer]:
    """Everything before the first step: corpus, split, tokenizer, tokens, and a new or restored Trainer.

    New run (resume=False): trains a tokenizer of model_config.vocab_size pieces on the training
    split and saves it in run_dir. An existing run there is an error unless replace=True.
    resume=True: reads the model config, tokenizer and corpus path back from run_dir (corpus may
    override the path; config may change the number of steps) and restores the latest checkpoint.
    """
    run_dir = Path(run_dir)
    corpus_file = run_dir / "corpus.json"
    earlier_run = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if resume:
        latest_checkpoint_step(run_dir)  # a clear error when there is nothing to resume
        model_config, saved = read_run_files(run_dir)
        config = config or saved
        corpus = _saved_corpus_path(run_dir) if corpus is None else corpus
        tokenizer = load_tokenizer(run_dir / "tokenizer.model")
    elif earlier_run and not replace:
        raise OSError(f"{run_dir}: already holds a training run; resume it (--resume) or choose another "
                      "output folder")
    model_config = model_config or preset("toy")
    config = config or TrainConfig()
    _training_memory(model_config, str(run_dir))  # before a tokenizer of vocab_size pieces is trained
    text = load_corpus(corpus)
    train_text, heldout_text = text.split()
    if not resume:
        tokenizer = train_tokenizer(train_text.splitlines(), model_config.vocab_size)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} pieces but the model's vocab_size is "
                         f"{model_config.vocab_size}")
    train_tokens = np.asarray(tokenizer.encode(train_text), np.int32)
    heldout_tokens = np.asarray(tokenizer.encode(heldout_text), np.int32)
    log(f"corpus: {text.source}: {len(text.documents)} documents, {text.num_chars:,} characters → "
        f"{len(train_tokens):,} training + {len(heldout_tokens):,} held-out tokens")
    if resume:
        trainer = Trainer.restore(run_dir, train_tokens, heldout_tokens, config=config)
        log(f"resuming {run_dir} at step {trainer.step} of {trainer.config.steps}")
    else:
        trainer = Trainer(model_config, config, train_tokens, heldout_tokens)  # checks the text against the config
        if earlier_run:  # only now, with every new input checked, does the earlier run go
            import shutil

            shutil.rmtree(run_dir / "checkpoints")
        tokenizer.save(run_dir / "tokenizer.model")
    corpus_file.write_text(json.dumps(dict(
        source=text.source, path=None if corpus is None else str(Path(corpus).absolute()),
        documents=len(text.documents), characters=text.num_chars,
        train_tokens=len(train_tokens), heldout_tokens=len(heldout_tokens)), indent=1))
    return trainer, tokenizer
