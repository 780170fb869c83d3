"""The sweep runner: same tokens and seeds for every experiment, resumable, tidy tables, clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from grok_mini import ConfigError, GrokConfig, explore
from grok_mini.explore import Experiment, read_results, run_sweep
from grok_mini.train import TrainConfig, Trainer

SMALL = GrokConfig(vocab_size=512, emb_size=32, key_size=8, num_q_heads=4, num_kv_heads=2, num_layers=2,
                   widening_factor=2.0, sequence_len=64, attn_output_multiplier=8**-0.5,
                   embedding_multiplier_scale=32**0.5)
QUICK = TrainConfig(steps=4, batch_size=2, seq_len=16, warmup_steps=1, eval_every=2, eval_windows=2)
EXPERIMENTS = (Experiment("base", "as is"), Experiment("top-1", "one expert", model={"num_selected_experts": 1}),
               Experiment("capped", "cap 5", variant={"logit_cap": 5.0}))
ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "notebooks" / "data" / "lab_sweep"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)  # enough distinct words for a 512-piece vocabulary
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(1500)]
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n\n".join(" ".join(rng.choice(words, 40)) + "." for _ in range(400)))
    return path


def test_sweep_writes_tidy_tables_and_resumes_without_redoing(tmp_path, corpus, monkeypatch):
    results = run_sweep(tmp_path, EXPERIMENTS, seeds=(0, 1), base=SMALL, training=QUICK, corpus=corpus,
                        progress=False)
    assert [(r["experiment"], r["seed"]) for r in results] == [(e.name, s) for e in EXPERIMENTS for s in (0, 1)]
    rows = read_results(tmp_path)
    assert len(rows) == 6 * (QUICK.steps + 1)  # every step, plus the final evaluation
    final = [r for r in rows if r["step"] == QUICK.steps]
    assert all(r["heldout_loss"] is not None and r["loss"] is None for r in final)
    top1 = next(r for r in rows if r["experiment"] == "top-1")
    base = next(r for r in rows if r["experiment"] == "base")
    assert top1["active_params"] < base["active_params"] and top1["total_params"] == base["total_params"]
    assert top1["flops_per_token"] < base["flops_per_token"]
    with open(tmp_path / "expert_load.csv", newline="") as file:
        load = list(csv.DictReader(file))
    assert len(load) == 6 * QUICK.steps * SMALL.num_layers * SMALL.num_experts
    by_token = {}
    for row in load:  # each layer's shares over the experts sum to 1 at every step
        key = (row["experiment"], row["seed"], row["step"], row["layer"])
        by_token[key] = by_token.get(key, 0) + float(row["share"])
    assert all(abs(total - 1) < 1e-3 for total in by_token.values())

    # Same seed, same tokens: the two seeds differ, and a rerun of the sweep trains nothing.
    assert results[0]["history"]["loss"] != results[1]["history"]["loss"]
    calls = []
    monkeypatch.setattr(Trainer, "run", lambda self, *a, **k: calls.append(1))
    again = run_sweep(tmp_path, EXPERIMENTS, seeds=(0, 1), base=SMALL, training=QUICK, corpus=corpus, progress=False)
    assert calls == [] and again == results


def test_an_interrupted_sweep_redoes_only_the_missing_run(tmp_path, corpus, monkeypatch):
    run_sweep(tmp_path, EXPERIMENTS[:2], seeds=(0,), base=SMALL, training=QUICK, corpus=corpus, progress=False)
    (tmp_path / "runs" / "top-1-seed0.json").unlink()
    trained = []
    original = Trainer.run
    monkeypatch.setattr(Trainer, "run", lambda self, *a, **k: trained.append(self.model_config) or original(
        self, *a, **k))
    run_sweep(tmp_path, EXPERIMENTS[:2], seeds=(0,), base=SMALL, training=QUICK, corpus=corpus, progress=False)
    assert [c.num_selected_experts for c in trained] == [1]


def test_an_invalid_experiment_is_refused_before_any_training(tmp_path, corpus):
    bad = Experiment("both", "redundant", variant={"router": "topk_softmax", "renormalize": True})
    with pytest.raises(ConfigError, match="experiment 'both': .*does nothing"):
        run_sweep(tmp_path, (EXPERIMENTS[0], bad), base=SMALL, training=QUICK, corpus=corpus, progress=False)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="experiment 'wide': .*num_selected_experts=9 exceeds"):
        Experiment("wide", "", model={"num_selected_experts": 9}).configs(SMALL, QUICK, 0)
    with pytest.raises(ConfigError, match="distinct"):
        run_sweep(tmp_path, (EXPERIMENTS[0], EXPERIMENTS[0]), base=SMALL, training=QUICK, corpus=corpus)


def test_every_default_experiment_builds():
    names = [e.name for e in explore.DEFAULT_SWEEP]
    assert len(names) == len(set(names)) == 8
    for experiment in explore.DEFAULT_SWEEP:
        model, train = experiment.configs(explore.preset("toy"), explore.SWEEP_TRAINING, 0)
        assert model.is_official == (not experiment.variant)


@pytest.mark.skipif(not (SHIPPED / "results.csv").exists(), reason="no shipped sweep results")
def test_the_shipped_sweep_is_reproduced(tmp_path):
    """One run of the shipped default sweep, trained again here: the same held-out losses within 0.05
    nats (the corpus and seeds are fixed; only the jax/XLA version's arithmetic may differ)."""
    experiment = explore.DEFAULT_SWEEP[0]
    shipped = json.loads((SHIPPED / "runs" / f"{experiment.name}-seed0.json").read_text())
    again = run_sweep(tmp_path, (experiment,), seeds=(0,), progress=False)[0]
    for ours, theirs in zip(again["history"]["heldout_loss"], shipped["history"]["heldout_loss"], strict=True):
        assert abs(ours - theirs) < 0.05
