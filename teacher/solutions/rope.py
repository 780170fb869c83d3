"""Reference solutions for notebook 03 (RoPE). Checked by grok_mini.teach.exercises.rope."""

import jax.numpy as jnp
import numpy as np


def rope_frequencies(key_size, base=10_000):
    return 1.0 / base ** (np.arange(0, key_size, 2) / key_size)  # [D/2]: pair i turns base^(-2i/D) per token


def apply_rope(x, positions):
    d = x.shape[-1]
    angles = positions[..., None].astype(jnp.float32) * jnp.asarray(rope_frequencies(d), jnp.float32)  # [B, T, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, D]: pair i ↔ dims i, i + D/2
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    rotate_half = jnp.concatenate([-x2, x1], axis=-1)
    return x * jnp.cos(angles) + rotate_half * jnp.sin(angles)
