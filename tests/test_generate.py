"""Generation: batched prompts of different lengths, sampling filters, EOS, input checks, the CLI."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grok_mini import generate
from grok_mini.cli import main
from grok_mini.generate import filter_logits, pad_prompts, sample_tokens, stream
from tests.conftest import FIXTURE, TINY

PROMPTS = [[5, 17, 33, 8, 61, 12, 9], [44, 3]]  # lengths 7 and 2 in one batch


def test_batched_prompts_of_different_lengths_equal_one_at_a_time(tiny_model):
    batched = generate(tiny_model, PROMPTS, 6)
    assert batched.shape == (2, 6)
    for row, prompt in zip(batched, PROMPTS, strict=True):
        np.testing.assert_array_equal(row, generate(tiny_model, prompt, 6))
    # The same batch given as one right-padded array.
    padded, lengths = pad_prompts(PROMPTS, pad_token=TINY.pad_token, vocab_size=TINY.vocab_size)
    assert padded.shape == (2, 7) and lengths.tolist() == [7, 2] and (padded[1, 2:] == TINY.pad_token).all()
    np.testing.assert_array_equal(generate(tiny_model, padded, 6), batched)


def test_sampled_batch_equals_one_at_a_time_with_per_row_seeds(tiny_model):
    settings = dict(temperature=1.5, top_k=20, top_p=0.9)
    batched = generate(tiny_model, PROMPTS, 6, seed=[11, 12], **settings)
    for row, prompt, seed in zip(batched, PROMPTS, [11, 12], strict=True):
        np.testing.assert_array_equal(row, generate(tiny_model, prompt, 6, seed=[seed], **settings))


def test_same_seed_same_samples_other_seed_other_samples(tiny_model):
    first = generate(tiny_model, PROMPTS, 12, temperature=2.0, seed=3)
    np.testing.assert_array_equal(first, generate(tiny_model, PROMPTS, 12, temperature=2.0, seed=3))
    assert not np.array_equal(first, generate(tiny_model, PROMPTS, 12, temperature=2.0, seed=4))
    assert not np.array_equal(first[0], first[1][:12])  # rows draw from their own keys


def test_stream_yields_what_generate_returns(tiny_model):
    steps = list(stream(tiny_model, PROMPTS, 6))
    assert len(steps) == 6 and all(step.shape == (2,) for step in steps)
    np.testing.assert_array_equal(np.stack(steps, axis=1), generate(tiny_model, PROMPTS, 6))


def test_stops_at_eos_and_pads_finished_rows(tiny_model):
    free = generate(tiny_model, PROMPTS, 6)
    eos = int(free[0, 2])
    stopped = generate(tiny_model, PROMPTS, 6, eos_token=eos)
    expected = free.copy()
    ends = []
    for row in expected:
        hits = np.flatnonzero(row == eos)
        end = hits[0] + 1 if hits.size else len(row)
        row[end:] = TINY.pad_token
        ends.append(end)
    np.testing.assert_array_equal(stopped, expected[:, :max(ends)])
    assert generate(tiny_model, PROMPTS[0], 6, eos_token=int(free[0, 0])).tolist() == [free[0, 0]]


# ---- top-k and top-p against an independent numpy computation ----------------------------------

def allowed_reference(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float) -> np.ndarray:
    """The tokens a sampler may draw, float64: top-k (ties kept), then the smallest set of most likely
    tokens whose probability exceeds top_p (all when none does), ties kept."""
    x = logits.astype(np.float64) / temperature
    if top_k is not None:
        kth = np.sort(x)[::-1][min(top_k, len(x)) - 1]
        x = np.where(x >= kth, x, -np.inf)
    p = np.exp(x - x.max())
    p /= p.sum()
    descending = np.sort(p)[::-1]
    mass = np.cumsum(descending)
    n = min(int(np.searchsorted(mass, top_p, side="right")) + 1, int(np.count_nonzero(p)))
    return (p >= descending[n - 1]) & (p > 0)


def _cases():
    rng = np.random.default_rng(0)
    for i in range(12):
        logits = rng.normal(size=50) * 2
        if i % 3 == 0:
            logits = np.round(logits * 2) / 2  # many exact ties
        for temperature in (0.5, 1.0, 2.0):
            for top_k in (None, 1, 5, 50, 80):
                for top_p in (0.05, 0.5, 0.9, 1.0):
                    yield logits.astype(np.float32), temperature, top_k, top_p


def test_filter_keeps_exactly_the_reference_set():
    filter_compiled = jax.jit(filter_logits)
    checked = 0
    for logits, temperature, top_k, top_p in _cases():
        reference = allowed_reference(logits, temperature, top_k, top_p)
        scaled = jnp.asarray(logits)[None] / temperature
        k = jnp.array([top_k or logits.size])
        kept = np.isfinite(np.asarray(filter_compiled(scaled, k, jnp.array([top_p], jnp.float32))[0]))
        x = logits / temperature
        p = np.exp(x - x.max())
        mass = np.cumsum(np.sort(p / p.sum())[::-1])
        if top_k is None and np.min(np.abs(mass - top_p)) < 1e-5:
            continue  # float32 vs float64 could disagree exactly at the boundary
        checked += 1
        np.testing.assert_array_equal(kept, reference, err_msg=f"T={temperature} k={top_k} p={top_p}")
    assert checked > 650  # of 720


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 3, 1.0), (1.0, None, 0.6), (2.0, 10, 0.8),
                                                        (0.7, 1, 1.0), (1.0, None, 0.01)])
def test_samples_never_leave_the_allowed_set(temperature, top_k, top_p):
    logits = np.round(np.random.default_rng(1).normal(size=64).astype(np.float32) * 3, 1)
    allowed = allowed_reference(logits, temperature, top_k, top_p)
    draws = 4000
    keys = jax.random.split(jax.random.key(0), draws)
    tokens = np.asarray(jax.jit(sample_tokens)(
        jnp.broadcast_to(jnp.asarray(logits), (draws, logits.size)), keys, jnp.full((draws,), temperature),
        jnp.full((draws,), top_k or logits.size), jnp.full((draws,), top_p)))
    assert allowed[tokens].all(), f"sampled {sorted(set(tokens[~allowed[tokens]]))} outside the allowed set"
    # and it does sample the allowed set in proportion: every allowed token of probability > 5% shows up
    x = np.where(allowed, logits / temperature, -np.inf)
    p = np.exp(x - x.max())
    p /= p.sum()
    assert set(np.flatnonzero(p > 0.05)) <= set(tokens.tolist())
    np.testing.assert_allclose(np.bincount(tokens, minlength=logits.size) / draws, p, atol=0.03)


# ---- input checks -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-0.1), "temperature must be"),
    (dict(temperature=float("nan")), "temperature must be"),
    (dict(top_p=0.0), "top_p must be in"),
    (dict(top_p=1.5), "top_p must be in"),
    (dict(top_k=0), "top_k must be"),
    (dict(top_k=2.5), "top_k must be"),
    (dict(max_new_tokens=0), "max_new_tokens must be"),
    (dict(seed=[1, 2, 3]), "3 per-row seeds for 2 prompts"),
])
def test_bad_settings_are_named(tiny_model, kwargs, message):
    max_new = kwargs.pop("max_new_tokens", 4)
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, PROMPTS, max_new, **kwargs)


@pytest.mark.parametrize("prompts, message", [
    ([[]], "prompt 0 is empty"),
    ([[5, 6], [0, 0]], "prompt 1 is empty"),
    ([[5, TINY.vocab_size]], f"token id {TINY.vocab_size} at position 1 is outside the vocabulary"),
    ([[5, -1]], "token id -1 at position 1"),
    ([[5, 0, 7]], "pad id 0 at position 1"),
    ([[1.5, 2.0]], "must be integers"),
    ([list(range(1, 62))], "61 tokens plus max_new_tokens=4 exceeds the model's sequence_len=64"),
])
def test_bad_prompts_are_named(tiny_model, prompts, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, prompts, 4)


def test_cli_generate_from_the_release_checkpoint_reproduces_the_official_greedy_tokens(capsys, reference):
    prompt = ",".join(str(int(t)) for t in reference["tokens"][0])
    code = main(["generate", str(FIXTURE), "--ids", prompt, "--temperature", "0", "--dtype", "float32",
                 "--max-new-tokens", str(len(reference["greedy"])), "--no-eos"])
    assert code == 0
    assert capsys.readouterr().out.split() == [str(int(t)) for t in reference["greedy"]]


def test_cli_generate_errors_are_one_line(capsys, tmp_path):
    assert main(["generate", str(tmp_path), "--prompt", "x"]) == 1
    assert "neither a training run" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), "--prompt", "x", "--top-p", "2"]) == 1
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
