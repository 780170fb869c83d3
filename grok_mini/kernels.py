"""A Pallas GPU kernel for decode: rows through their expert's int8 matrix, reading only that expert.

At decode a token's MoE costs the time to read its 2 experts' int8 weights (~600 MB each at
Grok-1 width), so the product must read each weight byte once. Written in plain XLA, the chosen
expert's slice `w[expert]` of the [E, in, out] stack is first copied out (a dynamic-slice fusion)
and only then multiplied: ~4x the bytes (benchmarks/RESULTS.md). This kernel indexes the stack
with the expert id inside the product, converts each int8 block to bfloat16 in registers, and
skips tiles that belong to no expert.

`expert_tiles_matmul(tiles, tile_expert, w, scales)` computes, for every tile i,
tiles[i] · dequantize(w[tile_expert[i]], scales[tile_expert[i]]), and zeros where
tile_expert[i] ≥ E (spare tiles). An int4 w (uint8 [E, in/2, out], quant.pack_int4) is read packed,
half the bytes of int8: each byte's two nibbles are unpacked in registers into rows r and r + G/2 of
its group, and multiplied by the two matching slices of the tile's rows. It runs with Pallas's
Triton lowering on a GPU and in Pallas's interpreter elsewhere (slow; that is how the tests check
it on a CPU). Its gradient is the plain XLA formulation's (`expert_tiles_matmul_reference`).

jax 0.11 marks Pallas's Triton lowering deprecated (Mosaic GPU is its successor): a port would keep
this function's contract, which tests/test_kernels.py pins down.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from grok_mini.layers import matmul

__all__ = ["KernelShape", "expert_tiles_matmul", "expert_tiles_matmul_reference", "use_kernel"]


@dataclasses.dataclass(frozen=True)
class KernelShape:
    """How the work is cut into programs; each computes a [block_rows, block_cols] piece of one tile
    from one of `splits` parts of the input dimension (float32 partial sums, added afterwards).

    splits=None: the fewest parts (a power of two) that give at least min_programs programs, so that
    every multiprocessor has work even for a matrix with few output columns (Grok-1's down
    projection: 6144). Block sizes are powers of two (a Triton requirement).
    """

    block_rows: int = 64  # at most: a tile's rows padded to a power of two ≥ 16 (the tensor cores' M)
    block_cols: int = 128
    block_inner: int = 64
    splits: int | None = None
    min_programs: int = 1024
    num_warps: int = 4
    num_stages: int = 4


def use_kernel(scales: jax.Array | None) -> bool:
    """The default: the kernel for int8 or int4 weights on a GPU, the plain XLA product otherwise."""
    return scales is not None and jax.default_backend() == "gpu"


def expert_tiles_matmul_reference(tiles: jax.Array, tile_expert: jax.Array, w: jax.Array, scales: jax.Array,
                                  dtype=jnp.bfloat16) -> jax.Array:
    """The kernel's function in plain XLA: tiles [T, t, in], tile_expert [T], w [E, in, out] int8 (or
    uint8 [E, in/2, out], int4), scales [E, blocks, out] → [T, t, out] in dtype (zeros for tiles with
    tile_expert ≥ E)."""
    num_experts = w.shape[0]

    def one_tile(rows, expert):
        held = jnp.minimum(expert, num_experts - 1)  # a spare tile borrows the last expert, then gives zeros
        return jnp.where(expert < num_experts, matmul(rows, w[held], scales[held], dtype), 0).astype(dtype)

    return jax.vmap(one_tile)(tiles, tile_expert)


def _kernel(expert_ref, x_ref, w_ref, scales_ref, out_ref, *, shape: KernelShape, units: int, int4: bool):
    """One program: rows r and columns c of tile i from input part s → out[s, i, r, c] (float32).

    The stored rows of w (input rows for int8, packed pairs for int4) are cut into `units` equal
    units, each inside one scale block and one part; a unit's product is summed over inner blocks,
    then scaled by its block's scales.
    """
    row_block, tile_split, col_block = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    tile, split = tile_split // shape.splits, tile_split % shape.splits
    expert = expert_ref[tile]
    rows = pl.ds(pl.multiple_of(row_block * shape.block_rows, shape.block_rows), shape.block_rows)
    cols = pl.ds(pl.multiple_of(col_block * shape.block_cols, shape.block_cols), shape.block_cols)
    num_experts, stored, blocks = w_ref.shape[0], w_ref.shape[1], scales_ref.shape[1]
    unit_size, units_per_split, block_size = stored // units, units // shape.splits, stored // blocks
    zeros = jnp.zeros((shape.block_rows, shape.block_cols), jnp.float32)

    def int8_step(start, x_dtype):
        inner = pl.ds(pl.multiple_of(start, shape.block_inner), shape.block_inner)
        x = x_ref[tile, rows, inner]  # [block_rows, block_inner]
        w = w_ref[expert, inner, cols].astype(x_dtype)  # int8 → bfloat16 in registers (exact)
        return jnp.dot(x, w, preferred_element_type=jnp.float32)

    def int4_step(start, x_dtype):
        # Packed row p of group g (G/2 packed rows) holds input rows g·G + p and g·G + G/2 + p.
        inner = pl.ds(pl.multiple_of(start, shape.block_inner), shape.block_inner)
        packed = w_ref[expert, inner, cols].astype(jnp.int16)  # [block_inner, block_cols]
        low, high = _int4_to_bfloat16(packed & 15), _int4_to_bfloat16((packed >> 4) & 15)  # masked: sign-extended too
        first = (start // block_size) * 2 * block_size + start % block_size  # input row of the low nibbles
        x_low = x_ref[tile, rows, pl.ds(pl.multiple_of(first, shape.block_inner), shape.block_inner)]
        x_high = x_ref[tile, rows, pl.ds(pl.multiple_of(first + block_size, shape.block_inner), shape.block_inner)]
        return (jnp.dot(x_low, low.astype(x_dtype), preferred_element_type=jnp.float32)
                + jnp.dot(x_high, high.astype(x_dtype), preferred_element_type=jnp.float32))

    def _int4_to_bfloat16(nibble):
        """A nibble (0..15, an int4 in two's complement) → its value in bfloat16, by bits alone.

        An int → float conversion per value made the kernel convert-bound (1.2 TB/s on an H200, half
        int8's bytes/s). Instead the nibble, offset to v + 8 in 0..15, goes into the low mantissa bits
        of bfloat16 128.0 (0x4300), which is then 128 + v + 8 exactly; subtracting 136 leaves v.
        """
        return jax.lax.bitcast_convert_type((nibble ^ 8) | 0x4300, jnp.bfloat16) - jnp.bfloat16(136)

    @pl.when(expert < num_experts)
    def _multiply():
        def unit(u, acc):
            first = (split * units_per_split + u) * unit_size

            def step(k, part):
                start = first + k * shape.block_inner
                return part + (int4_step if int4 else int8_step)(start, x_ref.dtype)

            part = jax.lax.fori_loop(0, unit_size // shape.block_inner, step, zeros)
            scale = scales_ref[expert, first // block_size, cols].astype(jnp.float32)  # [block_cols]
            return acc + part * scale[None, :]

        out_ref[split, tile, rows, cols] = jax.lax.fori_loop(0, units_per_split, unit, zeros)

    @pl.when(expert >= num_experts)
    def _spare():
        out_ref[split, tile, rows, cols] = zeros


def _pallas_forward(tiles, tile_expert, w, scales, dtype, shape: KernelShape, interpret: bool):
    num_tiles, rows, _ = tiles.shape
    stored, size_out, blocks = w.shape[-2], w.shape[-1], scales.shape[-2]  # stored rows: in, or in/2 for int4
    units = max(shape.splits, blocks)
    if units % shape.splits or units % blocks or stored % (units * shape.block_inner) or size_out % shape.block_cols:
        raise ValueError(f"kernel shape {shape} does not divide a [{stored}, {size_out}] matrix ({w.dtype}) "
                         f"with {blocks} scale blocks")
    padded_rows = -(-rows // shape.block_rows) * shape.block_rows
    x = jnp.pad(tiles.astype(dtype), ((0, 0), (0, padded_rows - rows), (0, 0)))
    partials = pl.pallas_call(
        functools.partial(_kernel, shape=shape, units=units, int4=w.dtype == jnp.uint8),
        out_shape=jax.ShapeDtypeStruct((shape.splits, num_tiles, padded_rows, size_out), jnp.float32),
        grid=(padded_rows // shape.block_rows, num_tiles * shape.splits, size_out // shape.block_cols),
        compiler_params=_triton_params(shape),
        interpret=interpret,
    )(tile_expert.astype(jnp.int32), x, w, scales)
    return jnp.sum(partials, axis=0)[:, :rows].astype(dtype)


def _triton_params(shape: KernelShape):
    if jax.default_backend() != "gpu":
        return None
    from jax.experimental.pallas import triton as pl_triton

    return pl_triton.CompilerParams(num_warps=shape.num_warps, num_stages=shape.num_stages)


def _power_of_two_dividing(size: int, at_most: int) -> int:
    """The largest power of two that divides size and is at most at_most."""
    return math.gcd(size, 1 << (at_most.bit_length() - 1))


def _fit(shape: KernelShape, num_tiles: int, rows: int, size_in: int, size_out: int, blocks: int) -> KernelShape:
    """Power-of-two blocks that divide the problem (Grok-1's sizes keep the defaults), and the number
    of parts (a shape given explicitly that does not divide is refused by _pallas_forward). size_in
    counts stored rows (in/2 for int4)."""
    block_rows = min(shape.block_rows, max(16, pl.next_power_of_2(rows)))
    block_cols = _power_of_two_dividing(size_out, shape.block_cols)
    inner = _power_of_two_dividing(size_in // blocks, shape.block_inner)
    splits = shape.splits
    if splits is None:
        programs = num_tiles * -(-rows // block_rows) * (size_out // block_cols)
        splits = 1
        while (programs * splits < shape.min_programs and size_in % (2 * splits * inner) == 0
               and max(2 * splits, blocks) % min(2 * splits, blocks) == 0):  # parts and scale blocks nest
            splits *= 2
    return dataclasses.replace(shape, block_rows=block_rows, block_cols=block_cols, block_inner=inner, splits=splits)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _expert_tiles_matmul(tiles, tile_expert, w, scales, dtype, shape, interpret):
    return _pallas_forward(tiles, tile_expert, w, scales, dtype, shape, interpret)


def _forward(tiles, tile_expert, w, scales, dtype, shape, interpret):
    return _pallas_forward(tiles, tile_expert, w, scales, dtype, shape, interpret), (tiles, tile_expert, w, scales)


def _backward(dtype, shape, interpret, residuals, cotangent):
    tiles, tile_expert, w, scales = residuals
    _, vjp = jax.vjp(lambda t, s: expert_tiles_matmul_reference(t, tile_expert, w, s, dtype), tiles, scales)
    d_tiles, d_scales = vjp(cotangent)
    return d_tiles, None, None, d_scales  # expert ids and int8/int4 weights have no gradient


_expert_tiles_matmul.defvjp(_forward, _backward)


def expert_tiles_matmul(tiles: jax.Array, tile_expert: jax.Array, w: jax.Array, scales: jax.Array,
                        dtype=jnp.bfloat16, *, shape: KernelShape | None = None,
                        interpret: bool | None = None) -> jax.Array:
    """tiles [T, t, in] · the int8 (or packed int4) matrix of each tile's expert → [T, t, out] in dtype.

    tile_expert [T] int (≥ E: a spare tile, output zeros), w [E, in, out] int8 or uint8 [E, in/2, out]
    (int4, quant.pack_int4), scales [E, blocks, out]. interpret=None runs the Triton kernel on a GPU
    and the interpreter elsewhere.
    """
    shape = _fit(shape or KernelShape(), *tiles.shape[:2], *w.shape[-2:], scales.shape[-2])
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    return _expert_tiles_matmul(tiles, tile_expert, w, scales, dtype, shape, interpret)
