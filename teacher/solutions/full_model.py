"""Reference solutions for notebook 06 (the full model). Checked by grok_mini.teach.exercises.full_model."""

import jax
import jax.numpy as jnp


def decoder_layer(layer, h, positions, key_mask):
    attended, _ = layer.multi_head_attention(layer.rms_norm(h), positions, key_mask)  # pre-norm, then attention
    h = h + layer.rms_norm_1(attended)  # post-norm of the sublayer's output, then the residual add
    return h + layer.rms_norm_3(layer.moe(layer.rms_norm_2(h)))  # the same sandwich around the MoE


def normalized_entropy(probs):
    entropy = jax.scipy.special.entr(probs).sum(axis=-1)  # -Σ p log p, with 0 log 0 = 0
    return entropy / jnp.log(probs.shape[-1])  # 1 for a uniform distribution over E
