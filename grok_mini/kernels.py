"""A Pallas GPU kernel for decode: rows through their expert's int8 matrix, reading only that expert.

At decode a token's MoE costs the time to read its 2 experts' int8 weights (~600 MB each at
Grok-1 width), so the product must read each weight byte once. Written in plain XLA, the chosen
expert's slice `w[expert]` of the [E, in, out] stack is first copied out (a dynamic-slice fusion)
and only then multiplied: ~4x the bytes (benchmarks/RESULTS.md). This kernel indexes the stack
with the expert id inside the product, converts each int8 block to bfloat16 in registers, and
skips tiles that belong to no expert.

`expert_tiles_matmul(tiles, tile_expert, w, scales)` computes, for every tile i,
tiles[i] · dequantize(w[tile_expert[i]], scales[tile_expert[i]]), and zeros where
tile_expert[i] ≥ E (spare tiles). It runs with Pallas's Triton lowering on a GPU and in Pallas's
interpreter elsewhere (slow; that is how the tests check it on a CPU). Its gradient is the plain
XLA formulation's (`expert_tiles_matmul_reference`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from grok_mini.layers import matmul

__all__ = ["KernelShape", "expert_tiles_matmul", "expert_tiles_matmul_reference", "use_kernel"]


@dataclasses.dataclass(frozen=True)
class KernelShape:
    """How the work is cut into programs (each computes a [block_rows, block_cols] piece of one tile).

    splits: each tile's input dimension is cut into this many parts, each a separate program, whose
    float32 partial sums are added afterwards (a multiple of the scale blocks, so a part has one scale
    row). More programs keep every multiprocessor reading when a matrix has few output columns
    (Grok-1's down projection: 6144). Block sizes are powers of two (a Triton requirement).
    """

    block_rows: int = 64  # at most; a tile's rows are padded to a power of two, at least 16 (the tensor cores' M)
    block_cols: int = 128
    block_inner: int = 128
    splits: int = 8
    num_warps: int = 4
    num_stages: int = 4


MAX_DECODE_ROWS = 64


def use_kernel(scales: jax.Array | None, tile_rows: int) -> bool:
    """The default: the kernel for int8 weights on a GPU at decode (tiles of at most 64 rows, which
    one program covers, so each weight byte is read once per tile); the plain XLA product otherwise.
    Prefill tiles (256 rows) are compute-bound, and XLA's own matmul is faster there (RESULTS.md)."""
    return scales is not None and jax.default_backend() == "gpu" and tile_rows <= MAX_DECODE_ROWS


def expert_tiles_matmul_reference(tiles: jax.Array, tile_expert: jax.Array, w: jax.Array, scales: jax.Array,
                                  dtype=jnp.bfloat16) -> jax.Array:
    """The kernel's function in plain XLA: tiles [T, t, in], tile_expert [T], w [E, in, out] int8,
    scales [E, blocks, out] → [T, t, out] in dtype (zeros for tiles with tile_expert ≥ E)."""
    num_experts = w.shape[0]

    def one_tile(rows, expert):
        out = matmul(rows, w[jnp.minimum(expert, num_experts - 1)], scales[jnp.minimum(expert, num_experts - 1)],
                     dtype)
        return jnp.where(expert < num_experts, out, 0).astype(dtype)

    return jax.vmap(one_tile)(tiles, tile_expert)


def _kernel(expert_ref, x_ref, w_ref, scales_ref, out_ref, *, shape: KernelShape, split_size: int,
            splits_per_block: int):
    """One program: rows `r`, columns `c` of tile i, input part s → out[s, i, r, c] (float32)."""
    tile_split, row_block, col_block = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    tile, split = tile_split // shape.splits, tile_split % shape.splits
    expert = expert_ref[tile]
    rows = pl.ds(pl.multiple_of(row_block * shape.block_rows, shape.block_rows), shape.block_rows)
    cols = pl.ds(pl.multiple_of(col_block * shape.block_cols, shape.block_cols), shape.block_cols)
    num_experts = w_ref.shape[0]

    @pl.when(expert < num_experts)
    def _multiply():
        def step(k, acc):
            start = pl.multiple_of(split * split_size + k * shape.block_inner, shape.block_inner)
            inner = pl.ds(start, shape.block_inner)
            x = x_ref[tile, rows, inner]  # [block_rows, block_inner]
            w = w_ref[expert, inner, cols].astype(x.dtype)  # int8 → bfloat16 in registers (exact)
            return acc + jnp.dot(x, w, preferred_element_type=jnp.float32)

        acc = jax.lax.fori_loop(0, split_size // shape.block_inner, step,
                                jnp.zeros((shape.block_rows, shape.block_cols), jnp.float32))
        scale = scales_ref[expert, split // splits_per_block, cols].astype(jnp.float32)  # [block_cols]
        out_ref[split, tile, rows, cols] = acc * scale[None, :]

    @pl.when(expert >= num_experts)
    def _spare():
        out_ref[split, tile, rows, cols] = jnp.zeros((shape.block_rows, shape.block_cols), jnp.float32)


def _pallas_forward(tiles, tile_expert, w, scales, dtype, shape: KernelShape, interpret: bool):
    num_tiles, rows, size_in = tiles.shape
    size_out, blocks = w.shape[-1], scales.shape[-2]
    padded_rows = -(-rows // shape.block_rows) * shape.block_rows
    splits = shape.splits
    if splits % blocks or size_in % (splits * shape.block_inner) or size_out % shape.block_cols:
        raise ValueError(f"kernel shape {shape} does not divide a [{size_in}, {size_out}] matrix "
                         f"with {blocks} scale blocks")
    x = jnp.pad(tiles.astype(dtype), ((0, 0), (0, padded_rows - rows), (0, 0)))
    kernel = functools.partial(_kernel, shape=shape, split_size=size_in // splits,
                               splits_per_block=splits // blocks)
    partials = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((splits, num_tiles, padded_rows, size_out), jnp.float32),
        grid=(num_tiles * splits, padded_rows // shape.block_rows, size_out // shape.block_cols),
        compiler_params=_triton_params(shape),
        interpret=interpret,
    )(tile_expert.astype(jnp.int32), x, w, scales)
    return jnp.sum(partials, axis=0)[:, :rows].astype(dtype)


def _triton_params(shape: KernelShape):
    if jax.default_backend() != "gpu":
        return None
    from jax.experimental.pallas import triton as pl_triton

    return pl_triton.CompilerParams(num_warps=shape.num_warps, num_stages=shape.num_stages)


def _fit(shape: KernelShape, rows: int, size_in: int, size_out: int, blocks: int) -> KernelShape:
    """Blocks no larger than the problem; at most shape.splits input parts, a multiple of the scale
    blocks, each a whole number of inner blocks (a shape that still does not divide is refused later)."""
    block_rows = min(shape.block_rows, max(16, pl.next_power_of_2(rows)))
    inner = min(shape.block_inner, size_in // blocks)
    steps = size_in // inner
    fitting = [s for s in range(blocks, shape.splits + 1, blocks) if steps % s == 0]
    return dataclasses.replace(shape, block_rows=block_rows, block_cols=min(shape.block_cols, size_out),
                               block_inner=inner, splits=max(fitting, default=blocks))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _expert_tiles_matmul(tiles, tile_expert, w, scales, dtype, shape, interpret):
    return _pallas_forward(tiles, tile_expert, w, scales, dtype, shape, interpret)


def _forward(tiles, tile_expert, w, scales, dtype, shape, interpret):
    return _pallas_forward(tiles, tile_expert, w, scales, dtype, shape, interpret), (tiles, tile_expert, w, scales)


def _backward(dtype, shape, interpret, residuals, cotangent):
    tiles, tile_expert, w, scales = residuals
    _, vjp = jax.vjp(lambda t, s: expert_tiles_matmul_reference(t, tile_expert, w, s, dtype), tiles, scales)
    d_tiles, d_scales = vjp(cotangent)
    return d_tiles, None, None, d_scales  # expert ids and int8 weights have no gradient


_expert_tiles_matmul.defvjp(_forward, _backward)


def expert_tiles_matmul(tiles: jax.Array, tile_expert: jax.Array, w: jax.Array, scales: jax.Array,
                        dtype=jnp.bfloat16, *, shape: KernelShape | None = None,
                        interpret: bool | None = None) -> jax.Array:
    """tiles [T, t, in] · the int8 matrix of each tile's expert → [T, t, out] in dtype.

    tile_expert [T] int (≥ E: a spare tile, output zeros), w [E, in, out] int8, scales
    [E, blocks, out]. interpret=None runs the Triton kernel on a GPU and the interpreter elsewhere.
    """
    shape = _fit(shape or KernelShape(), tiles.shape[1], *w.shape[-2:], scales.shape[-2])
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    return _expert_tiles_matmul(tiles, tile_expert, w, scales, dtype, shape, interpret)
