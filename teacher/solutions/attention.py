"""Reference solutions for notebook 04 (attention and GQA). Checked by grok_mini.teach.exercises.attention."""

import jax
import jax.numpy as jnp


def kv_head_for(query_head, num_q_heads, num_kv_heads):
    return query_head // (num_q_heads // num_kv_heads)  # contiguous groups of G query heads


def attention(q, k, v, mask, cap=30.0):
    group = q.shape[2] // k.shape[2]
    k = jnp.repeat(k, group, axis=2)  # [B, S, H, D]: K/V head g serves query heads g·G … g·G + G − 1
    v = jnp.repeat(v, group, axis=2)
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(q.shape[-1])
    logits = cap * jnp.tanh(logits / cap)
    logits = jnp.where(mask[:, None, :, :], logits, -1e30)
    weights = jax.nn.softmax(logits, axis=-1)  # over the keys
    return jnp.einsum("bhts,bshd->bthd", weights, v)
