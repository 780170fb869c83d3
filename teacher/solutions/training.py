"""Reference solutions for notebook 07 (training). Checked by grok_mini.teach.exercises.training."""

import math

import jax
import jax.numpy as jnp


def next_token_loss(logits, targets):
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # stable: subtracts the maximum logit inside
    picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [B, T]
    return -picked.mean()  # nats per token


def learning_rate(step, peak, warmup, total, final_fraction):
    if step < warmup:
        return peak * step / warmup  # linear warmup from 0
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)  # 0 → 1 over the decay, then stays at 1
    end = peak * final_fraction
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * progress))
