"""Make the short toy training runs that notebook 13 (router dynamics) plots.

    python scripts/make_router_runs.py                 # writes notebooks/data/13_router_dynamics/
    python scripts/make_router_runs.py --out /tmp/x    # somewhere else (the notebook's RETRAIN = True)
    python scripts/make_router_runs.py --steps 2 --seeds 0 --arms balance   # a quick look

Five arms × three seeds of the toy preset on the embedded corpus, with the package's own Trainer
(`grok_mini.train.Trainer`: next-token loss + balance loss + z-loss, AdamW), the same tokens, batch
order and schedule in every arm; only these differ:

    balance           the trainer's defaults: balance loss 0.01 (Switch's α), z-loss 0.001
    no-balance        balance_coef 0, z-loss 0.001: collapse?
    favoured-balance  every layer's router starts with expert 0 strongly favoured (see `favour_expert`);
                      balance loss 0.01, no z-loss: does the load even out?
    favoured-z        the same start, z-loss 0.001 only (it pulls the large favoured logit down)
    favoured-none     the same start, neither router loss: only the next-token loss trains the routers

Each run writes `<arm>-seed<k>.json` (arm, what, seed, the model and training configs, the favouring,
the per-step history: losses and expert load [step][layer][expert] rounded to 4 decimals, and its
wall time) plus `runs.json`, the index of what was made. Everything is seeded (model initialisation
and batch order by TrainConfig.seed); the tokenizer is trained once on the training split, as
`prepare_run` does. About 3 minutes on a 2-core CPU (10–20 s a run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from grok_mini.config import preset  # noqa: E402
from grok_mini.data import embedded_corpus, sample_windows  # noqa: E402
from grok_mini.tokenizer import train_tokenizer  # noqa: E402
from grok_mini.train import TrainConfig, Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "notebooks" / "data" / "13_router_dynamics"
SEEDS = (0, 1, 2)
# Short runs: 100 steps of 8 windows × 64 tokens (the lab's sweep settings), held-out loss at the start and end.
TRAINING = TrainConfig(steps=100, batch_size=8, seq_len=64, warmup_steps=10, eval_every=100, eval_windows=8)
FAVOURED_EXPERT = 0
FAVOUR_STRENGTH = 3.0  # added router logit per unit of a token's projection on the mean router input (≈ 2.5)
ARMS = {  # name: (what, balance_coef, z_coef, favoured at the start)
    "balance": ("balance loss and z-loss (the trainer's defaults)", 0.01, 1e-3, False),
    "no-balance": ("no balance loss (z-loss on)", 0.0, 1e-3, False),
    "favoured-balance": ("expert 0 favoured at the start; balance loss only", 0.01, 0.0, True),
    "favoured-z": ("expert 0 favoured at the start; z-loss only", 0.0, 1e-3, True),
    "favoured-none": ("expert 0 favoured at the start; neither router loss", 0.0, 0.0, True),
}
DECIMALS = 4


def run_file(out: Path, arm: str, seed: int) -> Path:
    return Path(out) / f"{arm}-seed{seed}.json"


def corpus_tokens(vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out tokens of the embedded corpus, with a tokenizer trained on the training split."""
    train_text, heldout_text = embedded_corpus().split()
    tokenizer = train_tokenizer(train_text.splitlines(), vocab_size)
    return (np.asarray(tokenizer.encode(train_text), np.int32), np.asarray(tokenizer.encode(heldout_text), np.int32))


def router_inputs(model, tokens: np.ndarray) -> list[np.ndarray]:
    """The input of every layer's router ([N, D], after rms_norm_2) for a batch of windows, as the model computes it."""
    config = model.config
    tokens = jnp.asarray(tokens)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    key_mask = tokens != config.pad_token
    h = model.in_out_embed[...][tokens] * config.embedding_multiplier_scale
    inputs = []
    for layer in model.decoder_layers:  # the four sandwich norms of the official model (no variant here)
        attended, _ = layer.multi_head_attention(layer.rms_norm(h), positions, key_mask, None)
        h = h + layer.rms_norm_1(attended)
        x = layer.rms_norm_2(h)
        inputs.append(np.asarray(x).reshape(-1, x.shape[-1]))
        h = h + layer.rms_norm_3(layer.moe(x))
    return inputs


def favour_expert(model, tokens: np.ndarray, expert: int = FAVOURED_EXPERT, strength: float = FAVOUR_STRENGTH) -> None:
    """Tilt every router towards `expert`: w[:, expert] += strength · m̂, m̂ the unit mean of that router's inputs.

    The router has no bias, but its inputs share a mean direction (frequent tokens): their projections
    on it are about 2.5 ± 1.2, so expert `expert` gets about strength × 2.5 more logit than it had, while
    the random logits have a spread of about 1: it is in nearly every token's top 2 (load ≈ 0.5).
    """
    for layer, x in zip(model.decoder_layers, router_inputs(model, tokens), strict=True):
        mean = x.mean(0)
        w = np.array(layer.moe.router.w[...])
        w[:, expert] += strength * mean / np.linalg.norm(mean)
        layer.moe.router.w[...] = jnp.asarray(w)


def train_arm(arm: str, seed: int, tokens, *, training: TrainConfig = TRAINING) -> dict:
    """One run of `arm` with `seed`: the record written to its JSON file."""
    what, balance_coef, z_coef, favoured = ARMS[arm]
    model_config = preset("toy")
    config = dataclasses.replace(training, balance_coef=balance_coef, z_coef=z_coef, seed=seed)
    start = time.perf_counter()
    trainer = Trainer(model_config, config, *tokens)
    if favoured:  # tilted with the first training batch's tokens (any batch of the corpus would do)
        favour_expert(trainer.model, sample_windows(tokens[0], config.batch_size, config.seq_len, seed=seed,
                                                    step=0)[:, :-1])
    trainer.run(progress=False)
    history = dict(trainer.history)
    for key in ("loss", "ce", "balance", "z", "heldout_loss"):
        history[key] = [round(v, 5) for v in history[key]]
    history["expert_load"] = np.round(np.asarray(history["expert_load"]), DECIMALS).tolist()
    return dict(arm=arm, what=what, seed=seed, model=model_config.to_dict(), train=dataclasses.asdict(config),
                favoured=dict(expert=FAVOURED_EXPERT, strength=FAVOUR_STRENGTH) if favoured else None,
                history=history, wall_s=round(time.perf_counter() - start, 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--steps", type=int, default=TRAINING.steps)
    args = parser.parse_args(argv)
    training = dataclasses.replace(TRAINING, steps=args.steps, eval_every=min(TRAINING.eval_every, args.steps))
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tokens = corpus_tokens(preset("toy").vocab_size)
    made = []
    for arm in args.arms:
        for seed in args.seeds:
            record = train_arm(arm, seed, tokens, training=training)
            path = run_file(args.out, arm, seed)
            path.write_text(json.dumps(record, separators=(",", ":")))
            made.append(dict(arm=arm, seed=seed, file=path.name))
            load = np.asarray(record["history"]["expert_load"][-10:]).mean(0)  # [L, E]
            print(f"{arm:<22} seed {seed}: {record['wall_s']:6.1f} s, final ce {record['history']['ce'][-1]:.3f}, "
                  f"busiest expert per layer {np.round(load.max(-1), 2).tolist()}", flush=True)
    (args.out / "runs.json").write_text(json.dumps(dict(arms={a: ARMS[a][0] for a in args.arms}, seeds=args.seeds,
                                                        runs=made, total_s=round(time.perf_counter() - start, 1)),
                                                   indent=1))
    print(f"{len(made)} runs in {time.perf_counter() - start:.0f} s → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
