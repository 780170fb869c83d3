"""Reference solutions for notebook 05 (expert routing). Checked by grok_mini.teach.exercises.routing."""

import jax
import jax.numpy as jnp


def top2_route(logits):
    probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)  # over all E experts, float32
    gates, expert_ids = jax.lax.top_k(probs, 2)  # largest first; no renormalisation: gates sum to < 1
    return gates, expert_ids


def balance_loss(logits, num_selected):
    probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)  # [N, E]
    num_tokens, num_experts = probs.shape
    _, chosen = jax.lax.top_k(probs, num_selected)  # [N, k]
    f = jnp.bincount(chosen.reshape(-1), length=num_experts) / (num_tokens * num_selected)  # Σ f = 1
    p = probs.mean(axis=0)  # mean router probability per expert
    return num_experts * jnp.sum(f * p)  # 1 when balanced, E / k when collapsed
