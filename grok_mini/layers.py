"""The pieces of a Grok-1 decoder layer other than the MoE: linear maps, RMSNorm, RoPE, attention.

Precision follows the official model: norms, rotary embedding, attention softmax in float32;
matrix products in the activation dtype (bfloat16 by default).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from grok_mini.config import RELEASE_BLOCKS, GrokConfig
from grok_mini.quant import Int4, dequantize, dequantize_int4, quantize, quantize_int4

__all__ = ["record", "Linear", "matmul", "RMSNorm", "rotary_embedding", "interleaved_rotary_embedding", "KVCache",
           "MultiHeadAttention", "attention_mask"]


def record(module: nnx.Module, name: str, value: jax.Array):
    """Keep `value` as an nnx.Intermediate of `module`, replacing the previous call's (no growth)."""
    module.sow(nnx.Intermediate, name, value, reduce_fn=lambda _, new: new, init_fn=lambda: None)


def _normal(rngs: nnx.Rngs, shape, fan_in: int, dtype):
    return jax.random.normal(rngs.params(), shape, jnp.float32).astype(dtype) / fan_in**0.5


class Linear(nnx.Module):
    """y = x · w with w [in, out] (a stack [experts, in, out] when `experts` is given); no bias.

    `w` is named as in the official Haiku checkpoint and multiplied in `dtype`. With
    param_dtype=jnp.int8 it stays int8 in memory beside bfloat16 `scales` [..., blocks, out], as
    released (see quant.py), and is dequantised block by block inside the matmul. With
    param_dtype=quant.Int4(group_size) `w` is uint8 [..., in/2, out], two int4 values a byte, beside
    bfloat16 `scales` [..., in/G, out] (`blocks` is then the group count's business, not the caller's).
    """

    def __init__(self, in_features: int, out_features: int, *, experts: int | None = None, blocks: int = 1,
                 dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs: nnx.Rngs):
        shape = (in_features, out_features) if experts is None else (experts, in_features, out_features)
        if isinstance(param_dtype, Int4):
            packed, scales = quantize_int4(_normal(rngs, shape, in_features, jnp.float32), param_dtype.group_size)
            self.w, self.scales = nnx.Param(packed), nnx.Param(jnp.asarray(scales))
        elif jnp.dtype(param_dtype) == jnp.int8:
            q = quantize(_normal(rngs, shape, in_features, jnp.float32), blocks)
            self.w, self.scales = nnx.Param(q.weight), nnx.Param(jnp.asarray(q.scales))
        else:
            self.w, self.scales = nnx.Param(_normal(rngs, shape, in_features, param_dtype)), None
        self.dtype = dtype

    def kernel(self) -> jax.Array:
        """The weight in `dtype`, dequantised first if stored as int8 or int4 (the plain reference path)."""
        if self.scales is None:
            return self.w[...].astype(self.dtype)
        if self.w.get_value().dtype == jnp.uint8:
            return dequantize_int4(self.w[...], self.scales[...], self.dtype)
        return dequantize(self.w[...], self.scales[...], self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return matmul(x, self.w[...], None if self.scales is None else self.scales[...], self.dtype)


def matmul(x: jax.Array, w: jax.Array, scales: jax.Array | None, dtype) -> jax.Array:
    """x [..., in] · w [in, out] in `dtype`; an int8 w (scales [blocks, out]) stays int8 until inside the product.

    Shared by Linear and the MoE's per-expert matmuls (moe.py), which pass one expert's w and scales.
    An int4 w (uint8 [in/2, out], scales [in/G, out]) is unpacked and scaled first, rounded once to
    dtype (so float32 gives exactly the dequantised product); decode reads it packed in the Pallas
    kernel instead (kernels.py).

    bfloat16 on a CPU: XLA runs the bfloat16 dot natively only when asked for a float32 result, about
    twice as fast as the float32 dot it converts to otherwise (benchmarks/RESULTS.md). There the products
    accumulate in float32 and the result is rounded to bfloat16 once, after the scales. Elsewhere the
    dot's result comes in dtype, as measured on the H200 (a float32 result slowed its prefill and decode).
    """
    x = x.astype(dtype)
    native = dtype == jnp.bfloat16 and jax.default_backend() == "cpu"
    result = jnp.float32 if native else dtype

    def dot(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32 if native else None)

    if scales is None:
        return dot("...i,io->...o", x, w.astype(dtype)).astype(dtype)
    if w.dtype == jnp.uint8:  # int4: dozens of groups, too many for the blocked product below
        return dot("...i,io->...o", x, dequantize_int4(w, scales, dtype)).astype(dtype)
    blocks = scales.shape[-2]
    if blocks == 1:  # one scale per output column: scale the product
        return (dot("...i,io->...o", x, w.astype(dtype)) * scales[0].astype(result)).astype(dtype)
    if native:  # XLA's CPU has no batched bfloat16 dot with a float32 result: one product per block
        total = 0.0
        for x_block, w_block, block_scales in zip(jnp.split(x, blocks, axis=-1), jnp.split(w, blocks), scales,
                                                  strict=True):
            total = total + dot("...i,io->...o", x_block, w_block.astype(dtype)) * block_scales.astype(result)
        return total.astype(dtype)
    # int8: multiply each input block by its int8 rows (exact in bf16), then scale and sum the blocks.
    x_blocks = rearrange(x, "... (b i) -> ... b i", b=blocks)
    w_blocks = rearrange(w, "(b i) o -> b i o", b=blocks).astype(dtype)
    partial = dot("...bi,bio->...bo", x_blocks, w_blocks)
    return jnp.einsum("...bo,bo->...o", partial, scales.astype(dtype))


class RMSNorm(nnx.Module):
    """scale ⊙ x / sqrt(mean(x²) + eps) in float32; the stored scale is used as is (no 1 + scale)."""

    def __init__(self, size: int, *, eps: float = GrokConfig.rms_norm_eps):
        self.scale = nnx.Param(jnp.ones((size,), jnp.float32))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32**2, axis=-1, keepdims=True) + self.eps)
        return (normed * self.scale[...]).astype(x.dtype)


def rotary_embedding(x: jax.Array, positions: jax.Array, base: float = GrokConfig.rope_base) -> jax.Array:
    """Rotate x [B, T, H, D] by position (half-split / NeoX convention, all D dimensions).

    Dimension i pairs with i + D/2 (not with i + 1 as in the interleaved convention), and the
    pair rotates by angle position / base^(2i/D). Computed in float32, returned in x's dtype.
    """
    half = x.shape[-1] // 2
    inv_freq = 1.0 / base ** (jnp.arange(half, dtype=jnp.float32) * 2 / x.shape[-1])  # [D/2]
    angles = positions.astype(jnp.float32)[:, :, None] * inv_freq  # [B, T, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, D]
    x32 = x.astype(jnp.float32)
    rotated_half = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * jnp.cos(angles) + rotated_half * jnp.sin(angles)).astype(x.dtype)


def interleaved_rotary_embedding(x: jax.Array, positions: jax.Array, base: float = GrokConfig.rope_base
                                 ) -> jax.Array:
    """The other RoPE convention (GPT-J, Llama's original code): dimension 2i rotates with 2i + 1.

    The same rotation as `rotary_embedding` applied to the dimensions in another order: not Grok-1's,
    and a checkpoint trained with one convention gives wrong logits under the other.
    """
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (jnp.arange(d // 2, dtype=jnp.float32) * 2 / d)  # [D/2]
    angles = positions.astype(jnp.float32)[:, :, None, None] * inv_freq  # [B, T, 1, D/2]
    x32 = x.astype(jnp.float32)
    even, odd = x32[..., 0::2], x32[..., 1::2]
    rotated = jnp.stack([even * jnp.cos(angles) - odd * jnp.sin(angles),
                         even * jnp.sin(angles) + odd * jnp.cos(angles)], axis=-1)  # [..., D/2, 2]
    return rotated.reshape(x.shape).astype(x.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Keys and values of one layer for `S` positions, and how many positions each row has filled.

    k, v: [B, S, KV, D]; key_mask: [B, S] (written and not padding); step: [B] int32.
    """

    k: jax.Array
    v: jax.Array
    key_mask: jax.Array
    step: jax.Array

    @classmethod
    def empty(cls, batch: int, length: int, config: GrokConfig, dtype=jnp.bfloat16) -> KVCache:
        shape = (batch, length, config.num_kv_heads, config.key_size)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype),
                   jnp.zeros((batch, length), bool), jnp.zeros((batch,), jnp.int32))

    def write(self, k: jax.Array, v: jax.Array, key_mask: jax.Array) -> KVCache:
        """Store T new positions at each row's own step (rows may be at different steps)."""

        def put(buffer, new, step):  # one row: buffer [S, ...], new [T, ...]
            return jax.lax.dynamic_update_slice_in_dim(buffer, new.astype(buffer.dtype), step, axis=0)

        put_rows = jax.vmap(put)
        return KVCache(put_rows(self.k, k, self.step), put_rows(self.v, v, self.step),
                       put_rows(self.key_mask, key_mask, self.step), self.step + k.shape[1])


def attention_mask(query_positions: jax.Array, key_positions: jax.Array, key_mask: jax.Array) -> jax.Array:
    """[B, T, S]: a query sees a key at or before its own position that is a real (non-pad) token."""
    causal = key_positions[:, None, :] <= query_positions[:, :, None]
    return causal & key_mask[:, None, :]


class MultiHeadAttention(nnx.Module):
    """Grouped-query attention with RoPE, 1/√key_size logits soft-capped by 30·tanh(x/30).

    Query heads g·G … g·G+G-1 share key/value head g (G = num_q_heads / num_kv_heads).
    """

    def __init__(self, config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs: nnx.Rngs):
        d, k = config.emb_size, config.key_size
        if isinstance(param_dtype, Int4) and not param_dtype.attention:
            param_dtype = jnp.int8  # int4 experts beside the release's int8 attention
        linear = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query = Linear(d, config.num_q_heads * k, **linear)
        self.key = Linear(d, config.num_kv_heads * k, **linear)
        self.value = Linear(d, config.num_kv_heads * k, **linear)
        self.linear = Linear(config.num_q_heads * k, d, blocks=RELEASE_BLOCKS, **linear)  # output projection
        self.config = config
        self.record_attention = False  # switched by grok_mini.recording: keeps the weights

    def __call__(self, x: jax.Array, positions: jax.Array, key_mask: jax.Array,
                 cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
        """x [B, T, D], positions [B, T], key_mask [B, T] → ([B, T, D], updated cache)."""
        cfg = self.config
        q = rearrange(self.query(x), "b t (h d) -> b t h d", d=cfg.key_size)
        k = rearrange(self.key(x), "b t (h d) -> b t h d", d=cfg.key_size)
        v = rearrange(self.value(x), "b t (h d) -> b t h d", d=cfg.key_size)
        variant = cfg.variant
        base = cfg.rope_base if variant.rope_base is None else variant.rope_base
        rope = rotary_embedding if variant.rope == "half_split" else interleaved_rotary_embedding
        q, k = rope(q, positions, base), rope(k, positions, base)

        if cache is None:
            key_positions = positions
        else:
            cache = cache.write(k, v, key_mask)
            k, v, key_mask = cache.k.astype(q.dtype), cache.v.astype(q.dtype), cache.key_mask
            key_positions = jnp.broadcast_to(jnp.arange(k.shape[1]), key_mask.shape)
        mask = attention_mask(positions, key_positions, key_mask)  # [B, T, S]

        q = rearrange(q, "b t (kv g) d -> b t kv g d", kv=cfg.num_kv_heads)
        logits = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32)
        logits = logits * cfg.attn_output_multiplier
        cap = cfg.max_attn_val if variant.logit_cap is None else variant.logit_cap
        if math.isfinite(cap):  # a soft cap: about x for |x| well below it, never beyond ±cap
            logits = cap * jnp.tanh(logits / cap)
        logits = jnp.where(mask[:, None, None, :, :], logits, -1e30)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bkgts,bskd->btkgd", weights, v)
        if self.record_attention:
            record(self, "attention_weights", weights)
        return self.linear(rearrange(out, "b t kv g d -> b t (kv g d)")), cache
