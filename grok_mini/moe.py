"""Mixture of experts: a float32 router picks 2 of 8 gated-GELU experts for every token.

The router takes a softmax over *all* experts and keeps the top-k probabilities as they are
(no renormalisation), exactly as the official model does.

Dispatch, i.e. getting each token to its k experts and back, has five implementations that compute
the same function (tests/test_moe.py checks values and gradients):

- `dense_moe`: the plain reference. Every expert runs on every token and the gates select; E/k times
  the needed FLOPs, obviously right.
- `official_dense_moe`: the xai-org/grok-1 formulation. Every token *copy* (N·k rows) runs through
  every expert, then a one-hot picks the chosen output: E times the needed FLOPs.
- `sparse_moe` (the model's default): token copies are placed expert by expert into tiles of
  `tile_rows` rows (each tile holds one expert's rows) and a scan runs each tile through its own
  expert. Dropless, static shapes, about the needed FLOPs. The fastest here on CPU and, on one
  H200, for prefill. At decode (up to 128 tokens a step) on a GPU with int8 weights it takes the
  faster ways measured there (`decode_path`): the tiles through a Pallas kernel
  (grok_mini/kernels.py) or, from 5 to 64 tokens, all experts in one batched product.
- `ragged_moe`: the same sort, then `jax.lax.ragged_dot` grouped matmuls. Equal, but on CPU
  ragged_dot is lowered as a dense masked product costing about E matmuls; on an H200 (jax 0.11.2)
  it was 2.5x slower than `sparse_moe` at prefill and faster at 64-token decode.
- `capacity_moe`: GShard/Switch training style; each expert takes at most
  ceil(N·k/E · capacity_factor) copies, the rest are dropped (contribute zero) and counted.

Int8 expert weights stay int8: each expert's matmul dequantises block by block inside the product
(`layers.matmul`), never the whole [E, in, out] stack. Int4 weights (`quant.Int4`) take the same
paths; at decode on a GPU the Pallas kernel reads them packed.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from grok_mini import kernels, sharding
from grok_mini.config import RELEASE_BLOCKS, GrokConfig
from grok_mini.layers import Linear, matmul, record

__all__ = ["gelu_tanh", "silu", "activation", "Router", "Experts", "MoELayer", "route", "dense_moe", "gate_matrix",
           "official_dense_moe", "sparse_moe", "ragged_moe", "capacity_moe", "position_in_expert",
           "default_tile_rows", "DISPATCHES"]

DISPATCHES = ("sparse", "ragged", "capacity", "dense", "official")


def gelu_tanh(x: jax.Array) -> jax.Array:
    """The expert activation: GELU in its tanh form (jax.nn.gelu's default), not SiLU, not exact erf."""
    return jax.nn.gelu(x, approximate=True)


def route(router_logits: jax.Array, num_selected: int, *, order: str = "softmax_topk",
          renormalize: bool = False) -> tuple[jax.Array, jax.Array]:
    """Softmax over all experts, then the top-k: (gates [..., k] float32, expert ids [..., k]).

    Grok-1's gates are those probabilities as they are (they sum to less than 1). The lab's
    variants: order="topk_softmax" takes the top-k logits and a softmax over just those;
    renormalize=True divides the top-k probabilities by their sum. The chosen experts are the
    same in all three (softmax keeps the order); only the gates differ.
    """
    logits = router_logits.astype(jnp.float32)
    if order == "topk_softmax":
        top, ids = jax.lax.top_k(logits, num_selected)
        return jax.nn.softmax(top, axis=-1), ids
    gates, ids = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), num_selected)
    if renormalize:
        gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
    return gates, ids


def silu(x: jax.Array) -> jax.Array:
    """The lab's alternative expert activation (SwiGLU's): not Grok-1's."""
    return jax.nn.silu(x)


def activation(name: str, x: jax.Array) -> jax.Array:
    """The expert activation the config's variant names: "gelu" (Grok-1's tanh form) or "silu"."""
    return gelu_tanh(x) if name == "gelu" else silu(x)


def gate_matrix(gates: jax.Array, experts: jax.Array, num_experts: int) -> jax.Array:
    """[..., k] gates and ids → [..., E] weights, zero for the experts a token was not sent to."""
    return jnp.einsum("...k,...ke->...e", gates, jax.nn.one_hot(experts, num_experts, dtype=gates.dtype))


class Router(nnx.Module):
    """logits = float32(x) · w, w [D, E] kept in float32 (a bf16 router can flip near-tied choices)."""

    def __init__(self, config: GrokConfig, *, rngs: nnx.Rngs):
        d = config.emb_size
        self.w = nnx.Param(jax.random.normal(rngs.params(), (d, config.num_experts), jnp.float32) / d**0.5)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("...d,de->...e", x.astype(jnp.float32), self.w[...])


class Experts(nnx.Module):
    """E gated-GELU FFNs: out_e(x) = (gelu_tanh(x·linear_e) ⊙ x·linear_v_e) · linear_1_e."""

    def __init__(self, config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs: nnx.Rngs):
        d, f, e = config.emb_size, config.ffn_size, config.num_experts
        linear = dict(experts=e, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear = Linear(d, f, **linear)  # gate, through GELU
        self.linear_v = Linear(d, f, **linear)  # value, not activated
        self.linear_1 = Linear(f, d, blocks=RELEASE_BLOCKS, **linear)  # down projection
        self.dtype = dtype
        self.activation = config.variant.activation  # "gelu" (Grok-1) or the lab's "silu"

    def act(self, x: jax.Array) -> jax.Array:
        return activation(self.activation, x)


def dense_moe(experts: Experts, x: jax.Array, gates: jax.Array) -> jax.Array:
    """Reference dispatch: all E experts on all N tokens, combined by gates [N, E] (zero = not chosen).

    x [N, D] → [N, D]. Adding the zero-gated experts' outputs changes nothing, so this equals
    Σ over the chosen k of gate · expert(x).
    """
    dtype = experts.dtype
    x = x.astype(dtype)
    gate = jnp.einsum("nd,edf->enf", x, experts.linear.kernel())
    value = jnp.einsum("nd,edf->enf", x, experts.linear_v.kernel())
    hidden = experts.act(gate) * value
    out = jnp.einsum("enf,efd->end", hidden, experts.linear_1.kernel())  # [E, N, D]
    return jnp.einsum("ne,end->nd", gates.astype(dtype), out)


def official_dense_moe(experts: Experts, x: jax.Array, gates: jax.Array, expert_ids: jax.Array) -> jax.Array:
    """The xai-org/grok-1 formulation: x [N, D], gates and expert_ids [N, k] → [N, D].

    Each token is repeated once per selected slot (N·k rows, token-major), every row goes through
    every expert (dequantised first), and a one-hot over the row's expert id keeps one output; the k
    outputs of a token are weighted by the gates (cast to dtype) and summed. E times the needed
    FLOPs; the official README says it is inefficient on purpose, to avoid custom kernels.
    """
    dtype, k, num_experts = experts.dtype, expert_ids.shape[-1], experts.linear.w.shape[0]
    copies = jnp.repeat(x.astype(dtype), k, axis=0)  # [N·k, D], rows n·k … n·k + k-1 are token n
    select = jax.nn.one_hot(expert_ids.reshape(-1), num_experts, dtype=dtype)  # [N·k, E]

    def every_expert_then_select(h: jax.Array, linear: Linear) -> jax.Array:
        all_outputs = jnp.einsum("mi,eio->emo", h, linear.kernel())  # [E, N·k, out]
        return jnp.einsum("me,emo->mo", select, all_outputs)

    hidden = experts.act(every_expert_then_select(copies, experts.linear)) * every_expert_then_select(
        copies, experts.linear_v)
    out = rearrange(every_expert_then_select(hidden, experts.linear_1), "(n k) d -> n k d", k=k)
    return jnp.einsum("nk,nkd->nd", gates.astype(dtype), out)


# ---- sparse dispatch: token copies sorted by expert ------------------------------------------------

def position_in_expert(expert_ids: jax.Array, num_experts: int) -> jax.Array:
    """For each copy of a flat list [M], how many earlier copies went to the same expert.

    expert id · (copies per expert) + position would be its index after a stable sort by expert; we
    compute the position with a cumulative count instead of sorting (GShard's "position in expert").
    """
    one_hot = jax.nn.one_hot(expert_ids, num_experts, dtype=jnp.int32)  # [M, E]
    earlier = jnp.cumsum(one_hot, axis=0) - one_hot
    return jnp.take_along_axis(earlier, expert_ids[:, None], axis=1)[:, 0]


def _token_copies(x: jax.Array, expert_ids: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """The k copies of every token, choice-major: ([k·N, D] rows, [k·N] expert ids).

    Copy c = j·N + n is token n's j-th choice, so all first choices come before any second choice
    (this order only matters to `capacity_moe`, where earlier copies win the free slots).
    """
    k = expert_ids.shape[-1]
    return jnp.tile(x.astype(dtype), (k, 1)), expert_ids.T.reshape(-1)


def _combine(copy_outputs: jax.Array, gates: jax.Array) -> jax.Array:
    """[k·N, D] choice-major expert outputs, gates [N, k] → Σ_j gate_j · output_j, [N, D]."""
    per_choice = rearrange(copy_outputs, "(k n) d -> k n d", k=gates.shape[-1])
    return jnp.einsum("nk,knd->nd", gates.astype(copy_outputs.dtype), per_choice)


def _expert_ffn(experts: Experts, rows: jax.Array, expert: jax.Array) -> jax.Array:
    """One expert's gated-GELU FFN on rows [t, D] → [t, D]; `expert` may be traced (picks its weights)."""

    def project(linear: Linear, h: jax.Array) -> jax.Array:
        scales = None if linear.scales is None else linear.scales[expert]  # int8: [blocks, out]
        return matmul(h, linear.w[expert], scales, experts.dtype)

    return project(experts.linear_1, experts.act(project(experts.linear, rows)) * project(experts.linear_v, rows))


def _run_tiles(experts: Experts, tiles: jax.Array, tile_expert: jax.Array, use_kernel: bool,
               mesh: Mesh | None = None) -> jax.Array:
    """tiles [T, t, D], tile_expert [T] (E for a spare tile) → [T, t, D]: each tile through its own expert's FFN.

    use_kernel: the Pallas kernel (grok_mini/kernels.py), which reads only the chosen experts' int8
    weights, in place; the decode path on a GPU (`_kernel_ffn`, split over `mesh` if given).
    Otherwise a scan reads one expert's weights per tile, so a tile costs one [t, D] × [D, F] product
    per matrix and the weights of experts no tile points at are never read. No skipping by lax.cond:
    under autodiff a cond would rebuild the whole [E, D, F] weight gradient every tile, while a plain
    scan accumulates it in place. The checkpoint policy keeps only the matmul outputs for the backward
    pass, not a copy of every tile's expert weights.
    """
    if use_kernel:
        return _kernel_ffn(experts, tiles, tile_expert, mesh)

    @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    def one_tile(carry, tile):
        rows, expert = tile
        return carry, _expert_ffn(experts, rows, expert)

    spare_to_last = jnp.minimum(tile_expert, experts.linear.w.shape[0] - 1)  # zero rows: zero outputs anyway
    return jax.lax.scan(one_tile, None, (tiles, spare_to_last))[1]


def _kernel_ffn(experts: Experts, tiles: jax.Array, tile_expert: jax.Array, mesh: Mesh | None) -> jax.Array:
    """The expert FFN of every tile by three Pallas kernel calls.

    On a mesh of several devices jit cannot split a Pallas call, so shard_map runs it on each
    device's own slice of the weights (sharding.py's rules: experts over `expert`, FFN width over
    `model`) with every tile: a device treats tiles of experts it does not hold as spare (zeros),
    its down projection gives a partial sum over its FFN columns, and a psum over both axes adds
    them up.
    """
    linears = {"linear": experts.linear, "linear_v": experts.linear_v, "linear_1": experts.linear_1}
    weights = [array for linear in linears.values() for array in (linear.w[...], linear.scales[...])]

    def ffn(tiles, tile_expert, w, w_scales, v, v_scales, w1, w1_scales):
        def project(h, weight, scales):
            return kernels.expert_tiles_matmul(h, tile_expert, weight, scales, experts.dtype)

        return project(experts.act(project(tiles, w, w_scales)) * project(tiles, v, v_scales), w1, w1_scales)

    if mesh is None or mesh.devices.size == 1:
        return ffn(tiles, tile_expert, *weights)

    def on_device(tiles, tile_expert, *weights):
        held = weights[0].shape[0]  # this device's experts: [first, first + held)
        local = tile_expert - jax.lax.axis_index(sharding.EXPERT) * held
        local = jnp.where((local >= 0) & (local < held), local, held)  # other devices' experts: spare
        partial = ffn(tiles, local, *weights)
        summed = jax.lax.psum(partial.astype(jnp.float32), (sharding.EXPERT, sharding.MODEL))  # in float32
        return summed.astype(partial.dtype)

    names = [f"moe.experts.{name}.{part}" for name in linears for part in ("w", "scales")]
    specs = [sharding.partition_spec(name, array.shape, mesh) for name, array in zip(names, weights, strict=True)]
    if specs[5][1] != specs[4][1]:  # each device must hold the scale blocks of its own linear_1 rows
        raise ValueError(f"the MoE decode kernel needs linear_1's {weights[5].shape[1]} scale blocks split over the "
                         f"model axis ({mesh.shape[sharding.MODEL]} devices) like its rows; set int8_kernel=False")
    return jax.shard_map(on_device, mesh=mesh, in_specs=(P(), P(), *specs), out_specs=P(),
                         check_vma=False)(tiles, tile_expert, *weights)


def _all_experts(experts: Experts, buckets: jax.Array) -> jax.Array:
    """buckets [E, C, D] → [E, C, D]: bucket e through expert e, one product batched over the experts
    per matrix (no per-expert slicing of the weight stacks; every expert's weights are read once)."""

    def project(linear: Linear, h: jax.Array) -> jax.Array:
        scales = None if linear.scales is None else linear.scales[...]  # int8: [E, blocks, out]
        return jax.vmap(lambda h, w, s: matmul(h, w, s, experts.dtype))(h, linear.w[...], scales)

    return project(experts.linear_1, experts.act(project(experts.linear, buckets)) * project(experts.linear_v, buckets))


def default_tile_rows() -> int:
    """Rows per tile for `sparse_moe` on the default backend.

    A GPU reads a [D, F] expert matrix in the time it multiplies it by ~150 rows (int8 weights, H100),
    so tiles of 256 rows cost little more than one row and decode reads each selected expert once
    (Grok-1 prefill on an H200: 256 rows beat 128 and 512).
    A CPU is compute-bound at any tile size; 128 rows balance padding waste against per-tile overhead
    (width 512, 4096 tokens: 128 and 256 equally fast, 32, 64 and 512 slower; benchmarks/RESULTS.md).
    """
    return 128 if jax.default_backend() == "cpu" else 256


ALL_EXPERTS_TOKENS = 64  # up to this many tokens a step, all experts in one batched product
MAX_DECODE_TOKENS = 128  # up to this many, decode paths (bound by reading the expert weights); past it, the scan
KERNEL_TILE_ROWS = 64  # the kernel's tile rows (fewer for fewer tokens): at 128 tokens 64 beat 32 and 128
DECODE_PATHS = ("kernel", "all experts", "scan")


def decode_path(num_tokens: int, num_selected: int, num_experts: int) -> str:
    """How `sparse_moe` runs a batch of num_tokens on a GPU with int8 or int4 experts, the fastest way
    measured there (one H200, Grok-1's MoE layer; benchmarks/RESULTS.md):

    - "kernel" with no more token copies than experts: the tiles through the Pallas kernel, which reads
      only the chosen experts' weights;
    - "all experts" up to ALL_EXPERTS_TOKENS tokens: most experts are in use, and one product batched
      over all of them (`capacity_moe` with room for every copy, so still dropless) reads each once;
    - "kernel" again up to MAX_DECODE_TOKENS, on tiles of KERNEL_TILE_ROWS rows: the batched product
      computes E·N rows, and its work now shows (2.79 ms against the kernel's 2.27 at 128 tokens);
    - "scan" past that (prefill): the tiles' scan, one XLA matmul per tile (5.19 ms at 128 tokens).
    """
    if num_tokens > MAX_DECODE_TOKENS:
        return "scan"
    if num_tokens * num_selected <= num_experts or num_tokens > ALL_EXPERTS_TOKENS:
        return "kernel"
    return "all experts"


def sparse_moe(experts: Experts, x: jax.Array, gates: jax.Array, expert_ids: jax.Array, *,
               tile_rows: int | None = None, int8_kernel: bool | None = None, mesh: Mesh | None = None,
               path: str | None = None) -> jax.Array:
    """Dropless sparse dispatch: x [N, D], gates and expert_ids [N, k] → [N, D].

    The M = N·k token copies are laid out expert by expert, each expert's run padded to whole tiles
    of t = min(tile_rows, N) rows, so every tile belongs to one expert. A token's k experts are
    distinct (top-k), so an expert gets at most N copies, and whatever the routing at most
    min((M + E·(t-1)) // t, M, E·ceil(N/t)) tiles hold rows (static shape); spare tiles are zeros.
    Compute: about M + E·t/2 rows instead of N·E (dense) or M·E (official).

    int8_kernel (None: `kernels.use_kernel`, i.e. int8 or int4 weights on a GPU) lets decode batches
    take the path `decode_path` picks; False (or float weights) keeps the tiles' scan at every size.
    path: one of DECODE_PATHS instead of the choice (benchmarks compare them; "kernel" and "all
    experts" need int8 or int4 weights). mesh: the device mesh the weights are split over
    (`sharding`), which the kernel needs to know.
    """
    num_experts, dtype = experts.linear.w.shape[0], experts.dtype
    n, k = expert_ids.shape
    if int8_kernel is None:
        int8_kernel = kernels.use_kernel(experts.linear.scales)
    if path is None:
        quantized = int8_kernel and experts.linear.scales is not None
        path = decode_path(n, k, num_experts) if quantized else "scan"
    if path not in DECODE_PATHS:
        raise ValueError(f"sparse_moe path {path!r} is not one of {', '.join(DECODE_PATHS)}")
    if path == "all experts":
        return capacity_moe(experts, x, gates, expert_ids, capacity_factor=num_experts / k)[0]

    copies, ids = _token_copies(x, expert_ids, dtype)  # [M, D], [M]
    m = ids.shape[0]
    t = min(tile_rows or (KERNEL_TILE_ROWS if path == "kernel" else default_tile_rows()), n)
    num_tiles = min((m + num_experts * (t - 1)) // t, m, num_experts * -(-n // t))

    group_sizes = jnp.bincount(ids, length=num_experts)  # copies per expert
    tiles_per_expert = -(-group_sizes // t)
    tile_end = jnp.cumsum(tiles_per_expert)  # expert e owns tiles [tile_end[e-1], tile_end[e])
    slot = (tile_end - tiles_per_expert)[ids] * t + position_in_expert(ids, num_experts)  # [M] row in the tiles
    tiles = jnp.zeros((num_tiles * t, copies.shape[-1]), dtype).at[slot].add(copies)  # slots are distinct

    owner = jnp.sum(jnp.arange(num_tiles)[:, None] >= tile_end, axis=1)  # experts ending before: E for spare tiles
    out = _run_tiles(experts, rearrange(tiles, "(T t) d -> T t d", t=t), owner, path == "kernel", mesh)
    return _combine(rearrange(out, "T t d -> (T t) d")[slot], gates)


def _ragged_matmul(linear: Linear, rows: jax.Array, group_sizes: jax.Array, row_expert: jax.Array) -> jax.Array:
    """rows [M, in] sorted by expert (group_sizes [E]) · their expert's weight → [M, out], via ragged_dot.

    int8: one ragged_dot per input block on the int8 rows cast to dtype, each row weighted by its
    expert's scales for that block.
    """
    dtype = linear.dtype
    rows = rows.astype(dtype)
    if linear.scales is None:
        return jax.lax.ragged_dot(rows, linear.w[...].astype(dtype), group_sizes)
    if linear.w.get_value().dtype == jnp.uint8:  # int4: dozens of groups; dequantised (to dtype) first
        return jax.lax.ragged_dot(rows, linear.kernel(), group_sizes)
    blocks = linear.scales.shape[-2]
    row_blocks = rearrange(rows, "m (b i) -> b m i", b=blocks)
    w_blocks = rearrange(linear.w[...], "e (b i) o -> b e i o", b=blocks)
    row_scales = linear.scales[...][row_expert].astype(dtype)  # [M, blocks, out]
    out = 0
    for b in range(blocks):
        out = out + jax.lax.ragged_dot(row_blocks[b], w_blocks[b].astype(dtype), group_sizes) * row_scales[:, b]
    return out


def ragged_moe(experts: Experts, x: jax.Array, gates: jax.Array, expert_ids: jax.Array) -> jax.Array:
    """Dropless dispatch with `jax.lax.ragged_dot`: copies sorted by expert, three grouped matmuls, unsorted.

    x [N, D], gates and expert_ids [N, k] → [N, D].
    """
    num_experts, dtype = experts.linear.w.shape[0], experts.dtype
    copies, ids = _token_copies(x, expert_ids, dtype)
    group_sizes = jnp.bincount(ids, length=num_experts)
    slot = (jnp.cumsum(group_sizes) - group_sizes)[ids] + position_in_expert(ids, num_experts)  # sorted position
    rows = jnp.zeros_like(copies).at[slot].add(copies)  # = copies[argsort(ids, stable=True)]
    row_expert = jnp.repeat(jnp.arange(num_experts), group_sizes, total_repeat_length=ids.shape[0])

    def grouped(linear, h):
        return _ragged_matmul(linear, h, group_sizes, row_expert)

    hidden = experts.act(grouped(experts.linear, rows)) * grouped(experts.linear_v, rows)
    return _combine(grouped(experts.linear_1, hidden)[slot], gates)


def expert_capacity(num_tokens: int, num_selected: int, num_experts: int, capacity_factor: float) -> int:
    """ceil(N·k/E · capacity_factor) copies per expert, at least 1 and at most N·k (more can never be used)."""
    return max(1, min(num_tokens * num_selected, math.ceil(num_tokens * num_selected / num_experts * capacity_factor)))


def capacity_moe(experts: Experts, x: jax.Array, gates: jax.Array, expert_ids: jax.Array,
                 capacity_factor: float = 1.25) -> tuple[jax.Array, jax.Array]:
    """Fixed-capacity dispatch (GShard/Switch): (x [N, D] → [N, D], number of dropped copies).

    Each expert gets a bucket of C = expert_capacity(...) rows, and all buckets go through their
    experts in one product batched over the experts (each weight stack read once, unsliced, which
    suits decode on a GPU with capacity_factor = E/k: dropless). Copies are admitted in choice-major
    order (every token's first choice before any second choice, then by token), and copies past C
    are dropped: they add nothing, and the token keeps only its other expert(s) and the residual.
    With capacity_factor ≥ E/k nothing can be dropped and this equals `dense_moe`.
    """
    num_experts, dtype = experts.linear.w.shape[0], experts.dtype
    capacity = expert_capacity(x.shape[0], expert_ids.shape[-1], num_experts, capacity_factor)
    copies, ids = _token_copies(x, expert_ids, dtype)
    position = position_in_expert(ids, num_experts)
    kept = position < capacity
    slot = jnp.where(kept, ids * capacity + position, num_experts * capacity)  # past the end: dropped
    buckets = jnp.zeros((num_experts * capacity, copies.shape[-1]), dtype).at[slot].add(copies, mode="drop")
    out = _all_experts(experts, rearrange(buckets, "(e c) d -> e c d", e=num_experts))
    copy_outputs = rearrange(out, "e c d -> (e c) d").at[slot].get(mode="fill", fill_value=0)
    return _combine(copy_outputs, gates), jnp.sum(~kept)


class MoELayer(nnx.Module):
    """Route each token to its top-k experts and sum their outputs weighted by the router's probabilities.

    `dispatch` picks how (see the module docstring): "sparse" (the default on one device or a mesh
    without an expert axis), "ragged", "capacity" (drops copies past `capacity_factor`; records how
    many as `dropped_copies`), "dense" (the plain reference the notebooks show, and the default on an
    expert axis: each device applies its own experts) or "official". `mesh`: the mesh the weights
    are split over (the GPU decode kernel then runs on each device's slice). `int8_kernel`: the
    Pallas decode kernel for int8 weights (None: on a GPU). Record the router logits with
    `grok_mini.recording(model, router=True)`.
    """

    def __init__(self, config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs: nnx.Rngs,
                 dispatch: str | None = None, capacity_factor: float = 1.25, tile_rows: int | None = None,
                 int8_kernel: bool | None = None, mesh: Mesh | None = None):
        self.router = Router(config, rngs=rngs)
        self.experts = Experts(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.mesh = mesh if mesh is not None and mesh.devices.size > 1 else None
        if config.variant.capacity_factor is not None:  # the lab's token dropping is part of the model
            if dispatch not in (None, "capacity"):
                raise ValueError(f"the config's variant drops tokens past capacity_factor="
                                 f"{config.variant.capacity_factor}, which only the 'capacity' dispatch does; "
                                 f"got dispatch={dispatch!r}")
            dispatch, capacity_factor = "capacity", config.variant.capacity_factor
        self.dispatch = default_dispatch(self.mesh) if dispatch is None else dispatch
        self.capacity_factor = capacity_factor
        self.tile_rows = tile_rows  # None: default_tile_rows() for the backend
        self.int8_kernel = int8_kernel
        self.record_router = False  # switched by grok_mini.recording
        _check_dispatch(self.dispatch)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, T, D] → [B, T, D]; records the router logits (for balance losses and plots) on request."""
        router_logits = self.router(x)  # [B, T, E] float32
        if self.record_router:
            record(self, "router_logits", router_logits)
        variant = self.config.variant
        gates, chosen = route(router_logits, self.config.num_selected_experts, order=variant.router,
                              renormalize=variant.renormalize)  # [B, T, k] each
        flat = x.reshape(-1, x.shape[-1])  # [N, D]
        gates, chosen = gates.reshape(flat.shape[0], -1), chosen.reshape(flat.shape[0], -1)  # [N, k]
        _check_dispatch(self.dispatch)
        if self.dispatch == "sparse":
            out = sparse_moe(self.experts, flat, gates, chosen, tile_rows=self.tile_rows, int8_kernel=self.int8_kernel,
                             mesh=self.mesh)
        elif self.dispatch == "ragged":
            out = ragged_moe(self.experts, flat, gates, chosen)
        elif self.dispatch == "capacity":
            out, dropped = capacity_moe(self.experts, flat, gates, chosen, self.capacity_factor)
            record(self, "dropped_copies", dropped)
        elif self.dispatch == "dense":
            out = dense_moe(self.experts, flat, gate_matrix(gates, chosen, self.config.num_experts))
        else:
            out = official_dense_moe(self.experts, flat, gates, chosen)
        return out.reshape(x.shape).astype(x.dtype)


def default_dispatch(mesh: Mesh | None) -> str:
    """"dense" on a mesh with an expert axis (each device applies its own experts, one sum across
    them); "sparse" otherwise (on an expert axis it would gather every expert stack everywhere)."""
    return "dense" if mesh is not None and dict(mesh.shape).get(sharding.EXPERT, 1) > 1 else "sparse"


def _check_dispatch(dispatch: str):
    if dispatch not in DISPATCHES:
        raise ValueError(f"MoE dispatch {dispatch!r} is not one of {', '.join(DISPATCHES)}")
