"""The Grok-1 model: embedding ×multiplier, decoder layers with four RMSNorms, tied output ×multiplier."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grok_mini.config import GrokConfig
from grok_mini.layers import KVCache, MultiHeadAttention, RMSNorm, record
from grok_mini.moe import MoELayer

__all__ = ["DecoderLayer", "Grok", "validate_tokens"]


def validate_tokens(tokens, config: GrokConfig) -> np.ndarray:
    """Check concrete token ids on the host: [B, T] integers in [0, vocab_size), 1 <= T <= sequence_len.

    An out-of-range id would otherwise be clamped silently by the embedding lookup.
    """
    array = np.asarray(tokens)
    if array.ndim != 2 or array.shape[1] == 0 or array.shape[0] == 0:
        raise ValueError(f"tokens must be a non-empty [batch, length] array of ids, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"tokens must be integer ids, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= config.vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is outside the vocabulary [0, {config.vocab_size})")
    if array.shape[1] > config.sequence_len:
        raise ValueError(f"{array.shape[1]} tokens exceed sequence_len={config.sequence_len}")
    return array.astype(np.int32)


class DecoderLayer(nnx.Module):
    """Sandwich norms: h += norm_1(attn(norm(h))); h += norm_3(moe(norm_2(h)))."""

    def __init__(self, config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs: nnx.Rngs):
        d = config.emb_size
        self.rms_norm = RMSNorm(d)  # before attention
        self.multi_head_attention = MultiHeadAttention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.rms_norm_1 = RMSNorm(d)  # after attention
        self.rms_norm_2 = RMSNorm(d)  # before the MoE
        self.moe = MoELayer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.rms_norm_3 = RMSNorm(d)  # after the MoE
        self.record_residual = False  # model.set_attributes(record_residual=True) keeps the residual RMS

    def __call__(self, h, positions, key_mask, cache=None):
        attended, cache = self.multi_head_attention(self.rms_norm(h), positions, key_mask, cache)
        h = h + self.rms_norm_1(attended)
        h = h + self.rms_norm_3(self.moe(self.rms_norm_2(h)))
        if self.record_residual:
            record(self, "residual_rms", jnp.sqrt(jnp.mean(h.astype(jnp.float32) ** 2, axis=-1)))  # [B, T]
        return h, cache


class Grok(nnx.Module):
    """Grok-1 at any scale. `model(tokens)` → logits [B, T, vocab]; `model.extend(tokens, cache)` →
    (logits, cache) continues a KV cache (one KVCache per layer, see `init_cache`).

    dtype is the activation dtype (bfloat16 as released, or float32); param_dtype holds the seven
    matrices of each layer. Embedding, norms and router are always float32, as in the release.
    """

    def __init__(self, config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.dtype = dtype
        # Tied: rows are token embeddings on the way in, and the output projection on the way out.
        self.in_out_embed = nnx.Param(
            jax.random.normal(rngs.params(), (config.vocab_size, config.emb_size), jnp.float32)
            / config.emb_size**0.5)
        self.decoder_layers = nnx.List(
            [DecoderLayer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for _ in range(config.num_layers)])
        self.rms_norm = RMSNorm(config.emb_size)  # final norm
        self.mesh = None  # the mesh the weights are split over, set by sharding.tell_model_the_mesh

    def init_cache(self, batch: int, length: int | None = None) -> list[KVCache]:
        """An empty KV cache for `length` positions (default: the config's sequence_len)."""
        length = self.config.sequence_len if length is None else length
        return [KVCache.empty(batch, length, self.config, self.dtype) for _ in self.decoder_layers]

    def _whole_width(self, h: jax.Array) -> jax.Array:
        """On a mesh: the residual stream [B, T, D] whole along D on every device (sharding.py says why)."""
        if self.mesh is None:
            return h
        from grok_mini import sharding  # not at the top: sharding imports this module

        return jax.lax.with_sharding_constraint(h, sharding.activation_sharding("residual", h.shape, self.mesh))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens [B, T] → logits [B, T, vocab], every position attending to those before it."""
        return self._forward(tokens, None)[0]

    def extend(self, tokens: jax.Array, cache: list[KVCache]) -> tuple[jax.Array, list[KVCache]]:
        """Continue from where `cache` stopped: tokens [B, T] → (logits [B, T, vocab], the updated cache).

        The caller keeps step + T within the cache length (`generate` does): writes past its end
        cannot be detected inside jit.
        """
        return self._forward(tokens, cache)

    def _forward(self, tokens, cache):
        cfg = self.config
        if not isinstance(tokens, jax.core.Tracer):  # concrete input: check it (traced input is the caller's job)
            tokens = validate_tokens(tokens, cfg)
        tokens = jnp.asarray(tokens)
        key_mask = tokens != cfg.pad_token  # padding is masked as keys only
        start = jnp.zeros((tokens.shape[0],), jnp.int32) if cache is None else cache[0].step
        positions = start[:, None] + jnp.arange(tokens.shape[1])[None, :]  # [B, T]

        embedding = self.in_out_embed[...]
        h = embedding[tokens].astype(self.dtype) * jnp.asarray(cfg.embedding_multiplier_scale, self.dtype)
        h = self._whole_width(h)
        new_cache = []
        for i, layer in enumerate(self.decoder_layers):
            h, layer_cache = layer(h, positions, key_mask, None if cache is None else cache[i])
            h = self._whole_width(h)
            new_cache.append(layer_cache)
        h = self.rms_norm(h)
        logits = jnp.einsum("btd,vd->btv", h, embedding.astype(self.dtype))
        return logits * jnp.asarray(cfg.output_multiplier_scale, self.dtype), new_cache
