"""The release's int8 quantisation: symmetric int8 weights with bfloat16 scales per input block.

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

__all__ = ["QuantizedWeight8bit", "quantize", "dequantize"]


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
