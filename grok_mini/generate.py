"""Autoregressive generation: prefill the prompt into a KV cache, then decode one token at a time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grok_mini.model import Grok

__all__ = ["generate"]


def generate(model: Grok, tokens, max_new_tokens: int, *, temperature: float = 0.0) -> np.ndarray:
    """Continue each row of `tokens` [B, T] (or one prompt [T]) by `max_new_tokens` ids.

    temperature 0 is greedy (argmax). Returns the new ids only: [B, max_new_tokens] (or [max_new_tokens]).
    """
    prompt = np.asarray(tokens, np.int32)
    single = prompt.ndim == 1
    prompt = prompt[None] if single else prompt
    if temperature != 0.0:
        raise NotImplementedError("only greedy decoding (temperature=0) is implemented so far")
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, tokens, cache):
        logits, cache = nnx.merge(graphdef, state)(tokens, cache)
        return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), cache

    cache = model.init_cache(prompt.shape[0], prompt.shape[1] + max_new_tokens)
    new = []
    next_token, cache = step(state, jnp.asarray(prompt), cache)
    for _ in range(max_new_tokens):
        new.append(next_token)
        if len(new) == max_new_tokens:
            break
        next_token, cache = step(state, next_token[:, None], cache)
    out = np.asarray(jnp.stack(new, axis=1))
    return out[0] if single else out
