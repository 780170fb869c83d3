"""Reference solutions for notebook 08 (generation). Checked by grok_mini.teach.exercises.generation."""

import jax
import jax.numpy as jnp


def top_k_filter(logits, k):
    kth_largest = jnp.sort(logits)[-k]
    return jnp.where(logits >= kth_largest, logits, -jnp.inf)  # ties with the k-th largest stay


def nucleus_filter(logits, top_p):
    ascending = jnp.sort(logits)
    from_bottom = jnp.cumsum(jax.nn.softmax(ascending))  # probability mass of the least likely tokens
    first = jnp.minimum(jnp.sum(from_bottom < 1 - top_p), logits.shape[-1] - 1)  # where it reaches 1 - top_p
    return jnp.where(logits >= ascending[first], logits, -jnp.inf)  # the rest: mass >= top_p, likeliest first
