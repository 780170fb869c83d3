"""The Pallas int8 expert kernel computes x · dequantize(w[expert]): values, spare tiles, gradients, in the MoE.

On a CPU the kernel runs in Pallas's interpreter; on a GPU the same tests run the Triton kernel
(`pytest tests/test_kernels.py` on the lent GPU machine), where float32 dots use TF32, hence the
2e-3 bounds (a wrong expert, scale block or row is off by far more).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from einops import einsum
from flax import nnx

from grok_mini import GrokConfig, kernels, moe, quant
from tests.conftest import relative_error

E, IN, OUT = 4, 256, 64
SMALL = kernels.KernelShape(block_cols=32, block_inner=32, splits=8)  # several programs per tile at test size
EXACT = 1e-5 if jax.default_backend() == "cpu" else 2e-3  # XLA's float32 dot on a GPU is TF32 too


def int8_stack(blocks: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """A random [E, IN, OUT] float matrix stack quantised with `blocks` scale blocks: (int8 w, scales)."""
    weights = np.random.default_rng(seed).normal(size=(E, IN, OUT)).astype(np.float32)
    q = quant.quantize(weights, blocks)
    return jnp.asarray(q.weight), jnp.asarray(q.scales)


def dequantised_first(tiles, tile_expert, w, scales):
    """float32 reference: each tile times its expert's dequantised matrix, zero for spare tiles (id ≥ E)."""
    matrices = quant.dequantize(np.asarray(w), np.asarray(scales, np.float32))  # [E, IN, OUT]
    padded = np.concatenate([matrices, np.zeros_like(matrices[:1])])  # row E: the spare tiles' zeros
    chosen = padded[np.minimum(np.asarray(tile_expert), E)]
    return einsum(np.asarray(tiles, np.float32), chosen, "T t i, T i o -> T t o")


@pytest.mark.parametrize("blocks", [1, 8])
@pytest.mark.parametrize("rows, splits", [
    (1, 4),  # one decode token (padded to 16 rows); parts spanning several scale blocks (8) or one (1)
    (20, 1),  # two row blocks; one part summing all units
])
def test_kernel_equals_dequantise_first(blocks, rows, splits):
    w, scales = int8_stack(blocks)
    tile_expert = jnp.array([2, 0, 2, E, 3])  # a repeated expert, a spare tile, expert 1 unused
    tiles = jax.random.normal(jax.random.key(blocks + rows), (5, rows, IN))
    shape = dataclasses.replace(SMALL, splits=splits)
    got = kernels.expert_tiles_matmul(tiles, tile_expert, w, scales, jnp.float32, shape=shape)
    want = dequantised_first(tiles, tile_expert, w, scales)
    assert got.shape == (5, rows, OUT)
    assert relative_error(got, want) < 2e-3
    assert not np.any(np.asarray(got[3]))  # the spare tile is zeros, not some expert's output
    reference = kernels.expert_tiles_matmul_reference(tiles, tile_expert, w, scales, jnp.float32)
    assert relative_error(reference, want) < EXACT


def test_kernel_in_bfloat16_within_bfloat16_tolerance():
    w, scales = int8_stack(8, seed=1)
    tile_expert = jnp.array([1, 3])
    tiles = jax.random.normal(jax.random.key(3), (2, 7, IN), jnp.bfloat16)
    got = kernels.expert_tiles_matmul(tiles, tile_expert, w, scales, shape=SMALL)
    assert got.dtype == jnp.bfloat16
    assert relative_error(got, dequantised_first(tiles, tile_expert, w, scales)) < 1e-2


def test_kernel_gradients_equal_dequantise_first():
    """d/d tiles and d/d scales (the int8 weights and expert ids have none)."""
    w, scales = int8_stack(8, seed=2)
    tile_expert = jnp.array([3, E, 0])
    tiles = jax.random.normal(jax.random.key(4), (3, 5, IN))
    cotangent = jax.random.normal(jax.random.key(5), (3, 5, OUT))
    scales = scales.astype(jnp.float32)

    def loss(matmul):
        return lambda t, s: jnp.sum(matmul(t, s) * cotangent)

    def by_kernel(t, s):
        return kernels.expert_tiles_matmul(t, tile_expert, w, s, jnp.float32, shape=SMALL)

    def by_dequantising(t, s):
        matrices = jnp.concatenate([quant.dequantize(w, s), jnp.zeros((1, IN, OUT))])[tile_expert]
        return einsum(t, matrices, "T t i, T i o -> T t o")

    got = jax.grad(loss(by_kernel), argnums=(0, 1))(tiles, scales)
    want = jax.grad(loss(by_dequantising), argnums=(0, 1))(tiles, scales)
    for g, expected in zip(got, want, strict=True):
        assert relative_error(g, expected) < 2e-3


MOE_CONFIG = GrokConfig(vocab_size=97, emb_size=64, key_size=8, num_q_heads=8, num_kv_heads=8, num_layers=1,
                        widening_factor=6.0, sequence_len=64)  # ffn 256: linear_1 has 8 blocks of 32 rows


@pytest.mark.parametrize("n", [3, 13])  # 6 copies ≤ 8 experts: the kernel's tiles; 26 copies: all experts batched
@pytest.mark.parametrize("routing", ["uneven", "empty"])
def test_sparse_moe_decode_paths_equal_dense_reference(routing, n):
    experts = moe.Experts(MOE_CONFIG, dtype=jnp.float32, param_dtype=jnp.int8, rngs=nnx.Rngs(0))
    logits = jax.random.normal(jax.random.key(6), (n, MOE_CONFIG.num_experts))
    logits = logits.at[:, 0].add(10.0) if routing == "uneven" else logits.at[:, 3:].set(-jnp.inf)
    gates, ids = moe.route(logits, 2)
    x = jax.random.normal(jax.random.key(7), (n, MOE_CONFIG.emb_size))
    want = moe.dense_moe(experts, x, moe.gate_matrix(gates, ids, MOE_CONFIG.num_experts))
    for tile_rows in (2, None):  # padded tiles and spare ones; one tile per used expert
        got = moe.sparse_moe(experts, x, gates, ids, tile_rows=tile_rows, int8_kernel=True)
        assert relative_error(got, want) < 2e-3


@pytest.mark.parametrize("path", moe.DECODE_PATHS)
def test_every_sparse_path_equals_the_dense_reference(path):
    """Each path a benchmark can pick computes the same function, whatever the batch size."""
    n = 13
    experts = moe.Experts(MOE_CONFIG, dtype=jnp.float32, param_dtype=jnp.int8, rngs=nnx.Rngs(0))
    gates, ids = moe.route(jax.random.normal(jax.random.key(8), (n, MOE_CONFIG.num_experts)), 2)
    x = jax.random.normal(jax.random.key(9), (n, MOE_CONFIG.emb_size))
    want = moe.dense_moe(experts, x, moe.gate_matrix(gates, ids, MOE_CONFIG.num_experts))
    got = moe.sparse_moe(experts, x, gates, ids, tile_rows=4, path=path)
    assert relative_error(got, want) < 2e-3


def test_large_decode_batches_take_the_kernel_on_its_own_tiles():
    """Past ALL_EXPERTS_TOKENS the default path is the kernel on KERNEL_TILE_ROWS-row tiles: still exact."""
    n = moe.ALL_EXPERTS_TOKENS + 6
    experts = moe.Experts(MOE_CONFIG, dtype=jnp.float32, param_dtype=jnp.int8, rngs=nnx.Rngs(0))
    gates, ids = moe.route(jax.random.normal(jax.random.key(10), (n, MOE_CONFIG.num_experts)), 2)
    x = jax.random.normal(jax.random.key(11), (n, MOE_CONFIG.emb_size))
    want = moe.dense_moe(experts, x, moe.gate_matrix(gates, ids, MOE_CONFIG.num_experts))
    assert relative_error(moe.sparse_moe(experts, x, gates, ids, int8_kernel=True), want) < 2e-3


def test_decode_path_choice_and_unknown_path():
    assert moe.decode_path(1, 2, 8) == "kernel"  # 2 copies: only the chosen experts are read
    assert moe.decode_path(4, 2, 8) == "kernel"  # 8 copies, at most 8 experts
    assert moe.decode_path(5, 2, 8) == "all experts"
    assert moe.decode_path(moe.ALL_EXPERTS_TOKENS, 2, 8) == "all experts"
    assert moe.decode_path(moe.ALL_EXPERTS_TOKENS + 1, 2, 8) == "kernel"  # batched work past the weights' read
    assert moe.decode_path(moe.MAX_DECODE_TOKENS, 2, 8) == "kernel"
    assert moe.decode_path(moe.MAX_DECODE_TOKENS + 1, 2, 8) == "scan"
    experts = moe.Experts(MOE_CONFIG, dtype=jnp.float32, param_dtype=jnp.int8, rngs=nnx.Rngs(0))
    gates, ids = moe.route(jnp.zeros((2, MOE_CONFIG.num_experts)), 2)
    with pytest.raises(ValueError, match="path 'tiles' is not one of kernel, all experts, scan"):
        moe.sparse_moe(experts, jnp.zeros((2, MOE_CONFIG.emb_size)), gates, ids, path="tiles")


def test_parts_are_chosen_to_fill_the_gpu():
    """Grok-1's down projection at 1-token decode: 2 tiles x 48 column blocks need 16 parts for 1024 programs."""
    shape = kernels._fit(kernels.KernelShape(), 2, 1, 32768, 6144, 8)
    assert (shape.block_rows, shape.splits) == (16, 16)
    assert kernels._fit(kernels.KernelShape(), 2, 1, 6144, 32768, 1).splits == 2  # 512 programs → 2 parts


def test_blocks_fit_sizes_that_are_not_powers_of_two():
    """The fixture's FFN width 176 = 11 · 16: 16 columns a block; 88 rows per scale block: 8 deep."""
    shape = kernels._fit(kernels.KernelShape(), 2, 1, 704, 176, 8)
    assert (shape.block_cols, shape.block_inner) == (16, 8)


def test_kernel_shape_that_does_not_divide_is_refused():
    w, scales = int8_stack(1)
    with pytest.raises(ValueError, match=r"does not divide a \[256, 64\] matrix"):
        kernels.expert_tiles_matmul(jnp.ones((1, 1, IN)), jnp.array([0]), w, scales,
                                    shape=kernels.KernelShape(splits=3))
