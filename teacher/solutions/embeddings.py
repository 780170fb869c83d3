"""Reference solutions for notebook 02 (embeddings and RMSNorm). Checked by grok_mini.teach.exercises.embeddings."""

import jax.numpy as jnp


def rms_norm(x, scale, eps=1e-5):
    x32 = x.astype(jnp.float32)  # Grok-1 normalises in float32, whatever the activation dtype
    mean_square = jnp.mean(x32**2, axis=-1, keepdims=True)
    return (x32 / jnp.sqrt(mean_square + eps) * scale).astype(x.dtype)  # the scale as stored, no 1 +


def tied_logits(h, embedding, config):
    logits = jnp.einsum("btd,vd->btv", h, embedding)  # the input embedding table, used as the output layer
    return logits * config.output_multiplier_scale
