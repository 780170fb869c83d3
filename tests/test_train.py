"""Training: the router losses, exact resume, determinism, learning, the CLI train/generate/tokenize."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grok_mini.cli import main
from grok_mini.data import embedded_corpus, read_corpus, sample_windows, split_paragraphs
from grok_mini.generate import generate
from grok_mini.train import (
    TrainConfig,
    Trainer,
    balance_loss,
    expert_load,
    load_trained_model,
    router_losses,
    router_z_loss,
)
from tests.conftest import TINY as TINY97

E, K = 8, 2
balance_loss = jax.jit(balance_loss, static_argnums=1)  # compiled: op-by-op dispatch is slow on CPU
router_z_loss = jax.jit(router_z_loss)
expert_load = jax.jit(expert_load, static_argnums=1)
TINY = dataclasses.replace(TINY97, vocab_size=512)  # a power of two, for the tokenizer of the CLI test
# Every run here has the same optimiser settings and shapes, so the training step compiles once;
# runs stop early with run(until) rather than changing `steps` (which changes the schedule).
FAST = TrainConfig(steps=40, batch_size=2, seq_len=16, warmup_steps=2, eval_every=2, eval_windows=2)


@pytest.fixture(scope="module")
def tokens() -> tuple[np.ndarray, np.ndarray]:
    """A learnable stream: a fixed 12-token phrase repeated, with one position in four replaced at random."""
    rng = np.random.default_rng(0)
    stream = np.tile(np.arange(10, 22), 400)
    noise = rng.random(stream.size) < 0.25
    stream[noise] = rng.integers(3, TINY.vocab_size, noise.sum())
    return stream[:4000], stream[4000:]


# ---- the router losses --------------------------------------------------------------------------

def test_balance_loss_of_a_uniform_router_is_its_minimum_one():
    assert float(balance_loss(jnp.zeros((64, E)), K)) == pytest.approx(1.0, abs=1e-6)
    # Confident but balanced: token t prefers experts t and t+1 (mod E); f = P = 1/E on average.
    logits = 5 * (jax.nn.one_hot(jnp.arange(64) % E, E) + 0.5 * jax.nn.one_hot((jnp.arange(64) + 1) % E, E))
    assert float(balance_loss(logits, K)) == pytest.approx(1.0, abs=1e-5)


def test_balance_loss_grows_as_routing_collapses_onto_one_expert():
    rng = np.random.default_rng(0)
    noise = jnp.asarray(rng.normal(size=(256, E)), jnp.float32)
    bias = jnp.array([1.0, 0.5] + [0.0] * (E - 2))  # expert 0 first, expert 1 second
    values = [float(balance_loss(noise + strength * bias, K)) for strength in (0, 1, 2, 5, 200)]
    assert all(a < b for a, b in zip(values, values[1:-1], strict=False)) and values[0] < 1.1
    assert values[-1] == pytest.approx(E / K, rel=1e-3)  # all tokens on experts {0, 1}, P₀ ≈ 1


def test_balance_loss_gradient_pushes_probability_off_the_overloaded_expert():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(128, E)), jnp.float32).at[:, 3].add(2.0)
    grad = jax.jit(jax.grad(lambda z: balance_loss(z, K)))(logits)
    assert float(grad[:, 3].mean()) > 0 > float(jnp.delete(grad, 3, axis=1).mean())
    assert float(balance_loss(logits - 1.0 * grad * 128, K)) < float(balance_loss(logits, K))


def test_padding_is_left_out_of_the_router_losses():
    real = jnp.zeros((4, 16, E))
    padded = jnp.concatenate([real, jnp.full((4, 8, E), 30.0).at[..., 0].set(60.0)], axis=1)
    mask = jnp.arange(24)[None, :].repeat(4, 0) < 16
    assert float(balance_loss(padded, K, mask)) == pytest.approx(float(balance_loss(real, K)), abs=1e-6)
    assert float(router_z_loss(padded, mask)) == pytest.approx(float(router_z_loss(real)), rel=1e-6)


def test_z_loss_is_the_mean_squared_logsumexp():
    logits = np.random.default_rng(2).normal(size=(3, 5, E)) * 4
    lse = np.log(np.exp(logits).sum(-1))
    assert float(router_z_loss(jnp.asarray(logits, jnp.float32))) == pytest.approx(float((lse**2).mean()), rel=1e-5)


def test_expert_load_counts_the_top_k_assignments():
    logits = jnp.array([[3.0, 2, 0, 0, 0, 0, 0, 0], [0, 2.0, 3, 0, 0, 0, 0, 0]])  # picks {0,1} and {2,1}
    np.testing.assert_allclose(expert_load(logits, K), [0.25, 0.5, 0.25, 0, 0, 0, 0, 0])


def test_router_losses_need_recorded_logits():
    from flax import nnx

    with pytest.raises(ValueError, match=r"recording\(model, router=True\)"):
        router_losses(nnx.State({}), 2)


# ---- the training loop --------------------------------------------------------------------------

def test_resume_continues_the_uninterrupted_loss_trajectory(tmp_path, tokens):
    uninterrupted = Trainer(TINY, FAST, *tokens).run(6, progress=False)
    Trainer(TINY, FAST, *tokens).run(3, run_dir=tmp_path, progress=False)  # stop halfway, checkpoint
    resumed = Trainer.restore(tmp_path, *tokens)
    assert resumed.step == 3
    resumed.run(6, run_dir=tmp_path, progress=False)
    assert resumed.history["loss"] == uninterrupted.history["loss"]  # exactly, step by step
    assert resumed.history["heldout_loss"] == uninterrupted.history["heldout_loss"]
    assert resumed.history["expert_load"] == uninterrupted.history["expert_load"]
    assert resumed.history["heldout_step"] == [0, 2, 4]
    for ours, theirs in zip(jax.tree_util.tree_leaves(resumed.model), jax.tree_util.tree_leaves(uninterrupted.model),
                            strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # The checkpoint holds the model for sampling too.
    restored = load_trained_model(tmp_path)
    np.testing.assert_array_equal(generate(restored, [12, 13, 14], 4), generate(uninterrupted.model, [12, 13, 14], 4))


def test_resume_refuses_other_data(tmp_path, tokens):
    Trainer(TINY, FAST, *tokens).run(2, run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="training text differs"):
        Trainer.restore(tmp_path, tokens[0][::-1].copy(), tokens[1])


def test_same_seed_same_losses_and_samples_other_seed_differs(tokens):
    runs = [Trainer(TINY, dataclasses.replace(FAST, seed=seed), *tokens).run(3, progress=False) for seed in (0, 0, 1)]
    assert runs[0].history["loss"] == runs[1].history["loss"]
    assert runs[0].history["loss"] != runs[2].history["loss"]
    samples = [generate(run.model, [12, 13, 14], 6, temperature=1.0, seed=5) for run in runs]
    np.testing.assert_array_equal(samples[0], samples[1])
    # Batches depend only on (seed, step).
    np.testing.assert_array_equal(sample_windows(tokens[0], 2, 16, seed=0, step=7),
                                  sample_windows(tokens[0], 2, 16, seed=0, step=7))
    assert not np.array_equal(sample_windows(tokens[0], 2, 16, seed=0, step=7),
                              sample_windows(tokens[0], 2, 16, seed=0, step=8))


def test_router_loss_coefficients_can_be_switched_off(tokens):
    off = Trainer(TINY, dataclasses.replace(FAST, balance_coef=0.0, z_coef=0.0), *tokens).run(2, progress=False)
    assert off.history["loss"] == off.history["ce"]
    assert min(off.history["balance"]) > 0.9 and min(off.history["z"]) > 0  # still measured
    on = Trainer(TINY, dataclasses.replace(FAST, balance_coef=0.5, z_coef=0.1), *tokens).run(2, progress=False)
    h = on.history
    assert h["loss"][0] == pytest.approx(h["ce"][0] + 0.5 * h["balance"][0] + 0.1 * h["z"][0], rel=1e-5)


def test_training_lowers_the_heldout_loss(tokens):
    trainer = Trainer(TINY, FAST, *tokens).run(progress=False)
    first, last = trainer.history["heldout_loss"][0], trainer.history["heldout_loss"][-1]
    assert last < 0.7 * first, (first, last)
    assert len(trainer.history["expert_load"]) == 40
    load = np.asarray(trainer.history["expert_load"])  # every step, every layer, every expert
    assert load.shape == (40, TINY.num_layers, TINY.num_experts)
    np.testing.assert_allclose(load.sum(-1), 1.0, atol=1e-4)


@pytest.mark.parametrize("field, value", [("steps", 0), ("learning_rate", 0.0), ("balance_coef", -1.0),
                                          ("seq_len", 1.5), ("z_coef", float("nan"))])
def test_bad_train_settings_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_windows_must_fit_the_model(tokens):
    with pytest.raises(ValueError, match="seq_len=128 exceeds the model's sequence_len=64"):
        Trainer(TINY, dataclasses.replace(FAST, seq_len=128), *tokens)


# ---- corpus -------------------------------------------------------------------------------------

def test_embedded_corpus_and_its_heldout_split_are_fixed():
    corpus = embedded_corpus()
    assert len(corpus.documents) > 50 and corpus.num_chars > 300_000
    train, heldout = corpus.split()
    assert corpus.split() == (train, heldout)
    assert 0.05 < len(heldout) / (len(train) + len(heldout)) < 0.2
    paragraphs = [p for _, text in corpus.documents for p in split_paragraphs(text)]
    assert heldout == "\n\n".join(paragraphs[9::10])  # every 10th paragraph of the corpus
    assert train == "\n\n".join(p for i, p in enumerate(paragraphs) if i % 10 != 9)


def test_read_corpus_takes_a_file_or_a_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second\n\nfile")
    (tmp_path / "a.md").write_text("first file")
    (tmp_path / "skip.bin").write_bytes(b"\xff\xfe")
    corpus = read_corpus(tmp_path)
    assert [name for name, _ in corpus.documents] == ["a.md", "b.txt"]
    assert read_corpus(tmp_path / "b.txt").documents == (("b.txt", "second\n\nfile"),)
    with pytest.raises(OSError, match="no such file"):
        read_corpus(tmp_path / "missing")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(OSError, match="not UTF-8"):
        read_corpus(tmp_path)


# ---- the CLI ------------------------------------------------------------------------------------

def cli_inputs(tmp_path) -> tuple[Path, Path, list[str]]:
    """(a TINY config file, a 12-document corpus file, the CLI flags for FAST training)."""
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(TINY.to_dict()))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(text for _, text in embedded_corpus().documents[:12]))
    fast = ["--steps", "40", "--batch-size", "2", "--seq-len", "16", "--warmup-steps", "2", "--eval-windows", "2",
            "--eval-every", "2"]  # = FAST
    return config_file, corpus, fast


def test_cli_train_resume_generate_tokenize(tmp_path, capsys):
    config_file, corpus, fast = cli_inputs(tmp_path)
    run = tmp_path / "run"
    common = ["--corpus", str(corpus), "--out", str(run), "--no-progress"]
    assert main(["train", "--config", str(config_file), *fast, "--until", "2", *common]) == 0
    assert main(["train", "--config", str(config_file), *fast, "--until", "2", *common]) == 1  # would overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--until", "4", *common]) == 0
    history = json.loads((run / "history.json").read_text())
    assert history["step"] == [0, 1, 2, 3] and history["heldout_step"] == [0, 2]  # step 4 is evaluated on resuming
    assert (run / "loss.png").stat().st_size > 1000 and (run / "expert_load.png").stat().st_size > 1000
    capsys.readouterr()

    assert main(["generate", str(run), "--prompt", "The statement", "--max-new-tokens", "5",
                 "--temperature", "0", "--no-eos"]) == 0
    streamed = capsys.readouterr().out
    assert streamed.startswith("The statement") and len(streamed.strip()) > len("The statement")

    assert main(["tokenize", "The if statement", "--tokenizer", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    pieces = [ast.literal_eval(line.split(maxsplit=1)[1]) for line in lines[1:-1]]
    assert "".join(pieces).replace("▁", " ") == " The if statement"  # the pieces spell the text
    assert lines[0].startswith(f"{len(pieces)} tokens") and lines[-1].startswith("ids: [")


def test_cli_demo_trains_plots_and_samples(tmp_path, capsys):
    config_file, corpus, fast = cli_inputs(tmp_path)
    out = tmp_path / "demo"
    args = ["demo", "--config", str(config_file), "--corpus", str(corpus), "--out", str(out), *fast,
            "--max-new-tokens", "4", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "samples before training" in printed and "samples after training" in printed
    assert "held-out loss:" in printed and "tokens/s" in printed
    assert printed.count("⟨") == 1 + 6  # the legend, then three prompts before and after training
    for name in ("loss.png", "expert_load.png", "samples.txt", "tokenizer.model", "checkpoints/40"):
        assert (out / name).exists(), name
    assert main(args) == 0  # a second demo replaces the first
