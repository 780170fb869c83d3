"""The release's int8 quantisation (symmetric int8 weights with bfloat16 scales per input block) and
our int4, re-quantised from it (groups of 64 or 128 input rows, two values a byte; `Int4`).

A matrix w [..., in, out] is stored as `weight` int8 [..., in, out] and `scales` bfloat16
[..., blocks, out]: each block of in/blocks consecutive input rows has one scale per output column.
The release uses 1 block for column-parallel matrices (q, k, v, expert linear / linear_v) and 8
for the row-parallel ones (attention output `linear`, expert `linear_1`).

Works on numpy arrays (host, the checkpoint reader) and on jax arrays (device, traced init) alike.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_dtypes
import numpy as np

from grok_mini.config import int4_group

__all__ = ["QuantizedWeight8bit", "quantize", "dequantize", "Int4", "int4_group", "pack_int4", "unpack_int4",
           "quantize_int4", "dequantize_int4", "requantize_int4"]


@dataclasses.dataclass
class QuantizedWeight8bit:
    """The release's int8 matrix (pickled under this name): weight int8, scales bfloat16."""

    weight: np.ndarray  # int8 [..., in, out]
    scales: np.ndarray  # bfloat16 [..., blocks, out]


def _blocked(w, blocks: int):
    """[..., in, out] → [..., blocks, in/blocks, out]."""
    size_in = w.shape[-2]
    if size_in % blocks:
        raise ValueError(f"cannot split {size_in} input rows into {blocks} quantisation blocks")
    return w.reshape(*w.shape[:-2], blocks, size_in // blocks, w.shape[-1])


def quantize(w, blocks: int) -> QuantizedWeight8bit:
    """Symmetric int8 with a bfloat16 scale max|w|/127 per (input block, output column)."""
    xp = jax.numpy if isinstance(w, jax.Array) else np
    blocked = _blocked(w.astype(xp.float32), blocks)
    scales = (xp.abs(blocked).max(axis=-2) / 127).astype(ml_dtypes.bfloat16)  # [..., blocks, out]
    safe = xp.where(scales == 0, 1, scales).astype(xp.float32)[..., :, None, :]
    weight = xp.clip(xp.round(blocked / safe), -127, 127).astype(xp.int8).reshape(w.shape)
    return QuantizedWeight8bit(weight=weight, scales=scales)


def dequantize(weight, scales, dtype=np.float32):
    """weight × scales, each scale row covering its block of input rows; computed in `dtype`.

    The product of an int8 and a bfloat16 is exact in float32, so dtype=bfloat16 rounds once,
    exactly as the release's own int8 × bfloat16 multiply does.
    """
    blocks = scales.shape[-2]
    product = _blocked(weight, blocks).astype(np.float32) * scales.astype(np.float32)[..., :, None, :]
    return product.reshape(weight.shape).astype(dtype)


# ---- int4 (ours): re-quantised from the release's int8, groups along the input, two values a byte ----

@dataclasses.dataclass(frozen=True)
class Int4:
    """Weights stored as int4 in groups of at most `group_size` input rows (bfloat16 scales), packed two a
    byte; given as a model's param_dtype. attention=False keeps the attention matrices int8 (the experts
    are 309 B of Grok-1's 316 B parameters, attention 5 B)."""

    group_size: int = 64
    attention: bool = False


def pack_int4(q):
    """int8 values in [-8, 7], [..., in, out], in groups of `in / groups` rows → uint8 [..., in/2, out].

    Within each group of G rows, byte r holds row r in its low nibble and row r + G/2 in its high one
    (a half split, not neighbouring rows), so a run of packed rows unpacks into two runs of whole input
    rows: the kernel multiplies each by its own contiguous slice of x. The group size is implied by the
    caller's reshape: q arrives as [..., groups, G, out].
    """
    xp = jax.numpy if isinstance(q, jax.Array) else np
    half = q.shape[-2] // 2
    low, high = q[..., :half, :].astype(xp.uint8) & 15, q[..., half:, :].astype(xp.uint8) & 15
    return low | (high << 4)


def unpack_int4(packed, groups: int):
    """uint8 [..., in/2, out] in `groups` groups → int8 [..., in, out]; the exact inverse of pack_int4."""
    xp = jax.numpy if isinstance(packed, jax.Array) else np
    grouped = packed.reshape(*packed.shape[:-2], groups, packed.shape[-2] // groups, packed.shape[-1])
    wide = grouped.astype(np.int8)  # the same bits, read as signed: each nibble is masked below

    def signed(nibble):  # 0..15 → -8..7
        return ((nibble & 15) ^ 8) - 8

    rows = xp.concatenate([signed(wide), signed(wide >> 4)], axis=-2)  # [..., groups, G, out]
    return rows.reshape(*packed.shape[:-2], 2 * packed.shape[-2], packed.shape[-1]).astype(xp.int8)


def quantize_int4(w, group_size: int):
    """Symmetric int4: (packed uint8 [..., in/2, out], bfloat16 scales [..., in/G, out]), scale max|w|/7
    per (group of G = int4_group(in, group_size) input rows, output column); values in [-7, 7]."""
    xp = jax.numpy if isinstance(w, jax.Array) else np
    groups = w.shape[-2] // int4_group(w.shape[-2], group_size)
    blocked = _blocked(w.astype(xp.float32), groups)  # [..., groups, G, out]
    scales = (xp.abs(blocked).max(axis=-2) / 7).astype(ml_dtypes.bfloat16)  # [..., groups, out]
    safe = xp.where(scales == 0, 1, scales).astype(xp.float32)[..., :, None, :]
    q = xp.clip(xp.round(blocked / safe), -7, 7).astype(xp.int8)
    packed = pack_int4(q)  # [..., groups, G/2, out]
    return packed.reshape(*w.shape[:-2], w.shape[-2] // 2, w.shape[-1]), scales


def dequantize_int4(packed, scales, dtype=np.float32):
    """The int4 weight [..., in, out] in `dtype`: unpacked, times its group's scale (exact in float32)."""
    return dequantize(unpack_int4(packed, scales.shape[-2]), scales, dtype)


def requantize_int4(weight, scales, group_size: int):
    """The release's int8 (weight, scales) → int4 (packed, scales): dequantised in float32, then quantised.

    What a release user can do (the float weights were never published)."""
    return quantize_int4(dequantize(weight, scales, np.float32), group_size)
