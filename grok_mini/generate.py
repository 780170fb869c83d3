"""Autoregressive generation: prefill the prompts into a KV cache, then decode one token at a time.

Prompts of different lengths share one batch: they are right-padded with the pad id, prefilled
together (pad keys are masked), and each row's cache `step` is then set to its own length, so
every row continues at its own position, exactly as if it ran alone.

Sampling follows the official runner: logits / temperature, then the nucleus (top-p) filter,
then a categorical draw; temperature 0 is greedy (argmax). We add an optional top-k filter
(before top-p) and compute the sampling in float32 (the runner divides bfloat16 logits).
Nucleus semantics (official): sort the logits ascending, accumulate the probabilities from the
bottom, find the first position where the sum reaches 1 − top_p, and keep every logit ≥ the
logit there. So the kept tokens are the most likely ones whose total probability exceeds
top_p, ties at the boundary are kept, and top_p = 1 keeps everything. top-k likewise keeps ties
with the k-th largest logit.

Length policy: the longest prompt plus max_new_tokens must fit in the model's sequence_len;
otherwise a ValueError says by how much (the official runner silently cuts the prompt's start).
Generation stops at max_new_tokens, or, when an `eos_token` is given (the CLI passes the
tokenizer's), earlier once every row has produced it; after its EOS a row's output is padded with
the pad id. The default eos_token=None never stops early, like the official runner.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grok_mini.config import shown
from grok_mini.model import Grok

__all__ = ["generate", "stream", "prefill", "decode_step", "Sampler", "sample_tokens", "filter_logits",
           "check_sampling", "pad_prompts", "BUCKET"]

BUCKET = 16  # prompts are padded, and caches sized, to multiples of this (like the runner's pad_sizes)


def check_sampling(temperature: float, top_k: int | None, top_p: float) -> None:
    """Raise a ValueError naming the setting when a sampling setting is outside its range."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number ≥ 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None (no top-k filter), got {top_k!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (1 = no nucleus filter), got {top_p!r}")


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Set the logits outside the top-k and outside the nucleus to -inf. logits [B, V]; top_k, top_p [B].

    top_k ≥ V keeps all (no filter); top_p = 1 keeps all.
    """
    vocab = logits.shape[-1]
    ascending = jnp.sort(logits, axis=-1)  # [B, V]
    kth_largest = jnp.take_along_axis(ascending, (vocab - jnp.clip(top_k, 1, vocab))[:, None], axis=-1)
    logits = jnp.where(logits >= kth_largest, logits, -jnp.inf)

    ascending = jnp.sort(logits, axis=-1)
    from_bottom = jnp.cumsum(jax.nn.softmax(ascending, axis=-1), axis=-1)  # [B, V]
    # First position whose cumulative probability reaches 1 - top_p: the number of positions before
    # it. (Capped at V - 1, so the most likely token is kept even when rounding leaves the sum < 1.)
    first = jnp.minimum(jnp.sum(from_bottom < (1 - top_p)[:, None], axis=-1), vocab - 1)
    threshold = jnp.take_along_axis(ascending, first[:, None], axis=-1)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def sample_tokens(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_k: jax.Array,
                  top_p: jax.Array) -> jax.Array:
    """One token per row from logits [B, V] (float32) with per-row keys [B] and settings [B]."""
    scaled = logits / temperature[:, None]
    filtered = filter_logits(scaled, top_k, top_p)
    return jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Sampler:
    """How each row's next token is chosen: argmax when `greedy`, else a draw at step i with key
    fold_in(keys[row], i) from logits / temperature filtered by top-k and top-p."""

    keys: jax.Array  # [B] one base key per row
    temperature: jax.Array  # [B] float32
    top_k: jax.Array  # [B] int32; vocab_size keeps every token
    top_p: jax.Array  # [B] float32; 1 keeps every token
    greedy: bool = dataclasses.field(default=False, metadata={"static": True})

    @classmethod
    def argmax(cls, batch: int) -> Sampler:
        """Greedy decoding for `batch` rows (the keys and settings are then unused)."""
        ones = jnp.ones((batch,), jnp.float32)
        return cls(jax.random.split(jax.random.key(0), batch), ones, jnp.ones((batch,), jnp.int32), ones, greedy=True)

    def choose(self, logits: jax.Array, step) -> jax.Array:
        """logits [B, V] float32 → token ids [B] int32."""
        if self.greedy:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        keys = jax.vmap(jax.random.fold_in, (0, None))(self.keys, step)
        return sample_tokens(logits, keys, self.temperature, self.top_k, self.top_p)


# The one inference path: `generate`/`stream`, the CLI, the benchmarks and the figures all run these
# two compiled functions. They take the model split once (graphdef, state = nnx.split(model)), so a
# step costs no Python walk over the model's variables, and they donate the cache: its buffers are
# updated in place instead of copied every token.

@functools.partial(jax.jit, static_argnums=0, donate_argnums=4)
def prefill(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array, lengths: jax.Array, cache: list,
            sampler: Sampler) -> tuple[jax.Array, list]:
    """Right-padded prompts tokens [B, T] with lengths [B] into an empty cache → (first new ids [B], cache).

    Each row's cache then resumes at its own length (its pad positions stay masked keys).
    """
    logits, cache = nnx.merge(graphdef, state).extend(tokens, cache)
    last = logits[jnp.arange(tokens.shape[0]), lengths - 1].astype(jnp.float32)  # [B, V]
    cache = [dataclasses.replace(layer, step=lengths) for layer in cache]
    return sampler.choose(last, 0), cache


@functools.partial(jax.jit, static_argnums=0, donate_argnums=3)
def decode_step(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array, cache: list, sampler: Sampler,
                step) -> tuple[jax.Array, list]:
    """One new token a row: the previous ids [B] → (next ids [B], cache). `step` (1, 2, ...) picks the draw's key."""
    logits, cache = nnx.merge(graphdef, state).extend(tokens[:, None], cache)
    return sampler.choose(logits[:, -1].astype(jnp.float32), step), cache


def pad_prompts(prompts, *, pad_token: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ids (a list of lists, or an array [B, T] right-padded with pad_token) → (padded [B, T], lengths [B]).

    Trailing pad ids are padding; a pad id inside a prompt, an empty prompt or an id outside the
    vocabulary is an error.
    """
    # Checked as Python numbers, as given: numpy would wrap 2**64 - 1 to -1 or turn [5, 1e23] into floats.
    rows = [list(row) if isinstance(row, (list, tuple)) else np.asarray(row).reshape(-1).tolist() for row in prompts]
    if not rows:
        raise ValueError("no prompts given")
    cleaned = []
    for i, row in enumerate(rows):
        for position, token in enumerate(row):
            if not isinstance(token, (int, np.integer)) or isinstance(token, (bool, np.bool_)):
                raise ValueError(f"prompt {i}: token ids must be integers, got {shown(token)} at position {position}")
            token = row[position] = int(token)
            if not 0 <= token < vocab_size:  # checked before the cast: 2**64 - 1 must not become -1
                raise ValueError(f"prompt {i}: token id {shown(token)} at position {position} is outside the "
                                 f"vocabulary [0, {vocab_size})")
        row = np.asarray(row, np.int64)
        end = len(row)
        while end and row[end - 1] == pad_token:
            end -= 1
        row = row[:end]
        if not len(row):
            raise ValueError(f"prompt {i} is empty: give at least one token")
        if (pads := np.flatnonzero(row == pad_token)).size:
            raise ValueError(f"prompt {i}: the pad id {pad_token} at position {pads[0]} would be masked; "
                             "pad ids can only be trailing padding")
        cleaned.append(row)
    lengths = np.array([len(row) for row in cleaned], np.int32)
    padded = np.full((len(cleaned), lengths.max()), pad_token, np.int32)
    for i, row in enumerate(cleaned):
        padded[i, :len(row)] = row
    return padded, lengths


def _checked_seed(seed) -> int:
    """jax.random.key takes a signed 64-bit integer; anything else is a ValueError, not an OverflowError."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not -(1 << 63) <= seed < 1 << 63:
        raise ValueError(f"seed must be an integer in [-2**63, 2**63), got {shown(seed)}")
    return int(seed)


def _row_keys(seed, batch: int) -> jax.Array:
    if not isinstance(seed, (list, tuple, np.ndarray)):  # one seed for the batch
        seed = _checked_seed(seed)
        return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(batch))
    seeds = [_checked_seed(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"seed: got {len(seeds)} per-row seeds for {batch} prompts")
    keys = [jax.random.fold_in(jax.random.key(s), 0) for s in seeds]  # = row 0 of an int seed s
    return jnp.stack(keys)


def stream(model: Grok, prompts, max_new_tokens: int, *, temperature: float = 0.0, top_k: int | None = None,
           top_p: float = 1.0, seed: int | Sequence[int] = 0, eos_token: int | None = None) -> Iterator[np.ndarray]:
    """Yield the next token of every row, [B] ids a step, as they are decoded (for streaming output).

    prompts: rows of ids (see `pad_prompts`). seed: one int (row i draws from fold_in(key(seed), i))
    or one seed per row (a row with seed s draws what row 0 of seed s would, so a batch reproduces
    one-at-a-time runs). eos_token: stop a row once it produced this id (e.g. config.eos_token);
    None (default) never stops early. Rows that have finished yield the pad id.
    """
    config = model.config
    check_sampling(temperature, top_k, top_p)
    if not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    tokens, lengths = pad_prompts(prompts, pad_token=config.pad_token, vocab_size=config.vocab_size)
    longest = int(lengths.max())
    if longest + max_new_tokens > config.sequence_len:
        raise ValueError(f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the "
                         f"model's sequence_len={config.sequence_len}; shorten the prompt or ask for at most "
                         f"{max(config.sequence_len - longest, 0)} new tokens")
    batch = tokens.shape[0]
    sampler = Sampler(_row_keys(seed, batch),
                      jnp.full((batch,), max(temperature, 1e-6), jnp.float32),  # unused when greedy
                      jnp.full((batch,), config.vocab_size if top_k is None else min(int(top_k), config.vocab_size),
                               jnp.int32),
                      jnp.full((batch,), top_p, jnp.float32), greedy=temperature == 0)

    graphdef, state = nnx.split(model)
    # Round the prefill width and the cache length up to a multiple of BUCKET (within sequence_len):
    # fewer distinct shapes, fewer compilations; the extra positions are masked pad keys.
    width = min(-(-longest // BUCKET) * BUCKET, config.sequence_len - max_new_tokens)
    tokens = np.pad(tokens, ((0, 0), (0, width - tokens.shape[1])), constant_values=config.pad_token)
    cache = model.init_cache(batch, min(-(-(width + max_new_tokens) // BUCKET) * BUCKET, config.sequence_len))
    token, cache = prefill(graphdef, state, jnp.asarray(tokens), jnp.asarray(lengths), cache, sampler)
    finished = jnp.zeros(batch, bool)
    for i in range(max_new_tokens):
        ids = jnp.where(finished, config.pad_token, token)  # rows past their EOS feed and show the pad id
        if eos_token is not None:
            finished = finished | (ids == eos_token)
        if i + 1 < max_new_tokens:  # dispatch the next step before waiting for this one's ids: the device
            token, cache = decode_step(graphdef, state, ids, cache, sampler, i + 1)  # never idles on the host
        yield np.asarray(ids)
        if eos_token is not None and bool(np.asarray(finished).all()):
            return


def generate(model: Grok, tokens, max_new_tokens: int, *, temperature: float = 0.0, top_k: int | None = None,
             top_p: float = 1.0, seed: int | Sequence[int] = 0, eos_token: int | None = None) -> np.ndarray:
    """Continue each prompt by up to `max_new_tokens` ids; see `stream` for the settings.

    tokens: one prompt [T], rows [B, T] right-padded with the pad id, or a list of prompts of
    different lengths. temperature 0 is greedy (argmax). Returns the new ids only,
    [B, n] (or [n] for one prompt): n = max_new_tokens, or less when `eos_token` is given and every
    row produced it; after its EOS a row holds pad ids.
    """
    single = isinstance(tokens, (np.ndarray, jax.Array)) and np.ndim(tokens) == 1 or (
        isinstance(tokens, (list, tuple)) and len(tokens) > 0 and np.ndim(tokens[0]) == 0)
    prompts = [tokens] if single else tokens
    steps = list(stream(model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, eos_token=eos_token))
    out = np.stack(steps, axis=1).astype(np.int32)
    return out[0] if single else out
