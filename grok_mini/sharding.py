"""Spreading Grok over many devices: a named device mesh, one partition rule per parameter, placement.

The mesh has three named axes (a device grid of data × expert × model):

  data    copies of the whole model, each serving its own slice of the batch
  expert  the experts split into groups (expert parallelism); everything else is copied along it
  model   tensor parallelism as in the release: heads, expert FFN width, embedding width split

A parameter's PartitionSpec names, for each of its dimensions, the mesh axis it is split over (or
None: every device holds all of it). jax.jit compiles the model for those shardings and inserts the
communication itself, so the model code stays the plain single-device code.

Loading (`place`, used by `load_checkpoint(..., mesh=mesh)`) asks each file only for the slices of
the devices this process drives, so host memory stays near one tensor whatever the model size.

With an expert axis, run the MoE with `model.set_attributes(dispatch="dense")`: each device then
applies its own experts and the outputs are summed across the axis. The default sparse dispatch
picks an expert's weights by a traced index, and jit serves that by gathering every expert stack
onto every device (right, but the all-gathers cost what expert parallelism was meant to save).
Its GPU decode kernel is the exception: loading onto a mesh tells the model the mesh
(`tell_model_the_mesh`), the kernel then runs on each device's own slice under shard_map, and
the residual stream is kept whole along the width (two all-reduces a layer).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from grok_mini.config import GrokConfig
from grok_mini.model import Grok
from grok_mini.quant import QuantizedWeight8bit

__all__ = ["MeshError", "AXES", "PARAMETER_RULES", "ACTIVATION_RULES", "make_mesh", "check_mesh", "partition_spec",
           "abstract_model", "param_sharding", "place", "shard_model", "shard_tokens", "shard_cache",
           "tell_model_the_mesh", "activation_sharding"]

DATA, EXPERT, MODEL = "data", "expert", "model"
# The model axis comes last: neighbouring devices (the fastest links) share the most traffic,
# the all-reduce after every row-parallel matrix.
AXES = (DATA, EXPERT, MODEL)


class MeshError(ValueError):
    """A mesh that does not fit the visible devices or cannot split the model evenly."""


# ---- the mesh -------------------------------------------------------------------------------------

def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def check_mesh(config: GrokConfig, mesh: Mesh | dict[str, int]) -> None:
    """Raise MeshError unless every split tensor divides evenly over its mesh axis (names the value)."""
    sizes = _axis_sizes(mesh)
    model, expert = sizes[MODEL], sizes[EXPERT]
    needs = [(model, MODEL, "num_q_heads", config.num_q_heads, "each device computes whole query heads"),
             (model, MODEL, "num_kv_heads", config.num_kv_heads, "each device holds whole key/value heads"),
             (model, MODEL, "ffn_size", config.ffn_size, "the expert FFN width is split over it"),
             (model, MODEL, "emb_size", config.emb_size, "the embedding width is split over it"),
             (expert, EXPERT, "num_experts", config.num_experts, "each device holds whole experts")]
    for size, axis, name, value, why in needs:
        if value % size:
            raise MeshError(f"mesh {axis}={size} does not divide {name}={value} ({why}); "
                            f"{axis} sizes that fit: {_divisors(value)}")


def make_mesh(data: int = 1, model: int | None = None, expert: int = 1, *,
              config: GrokConfig | None = None, devices=None) -> Mesh:
    """A Mesh over all visible devices (or `devices`) with axes ("data", "expert", "model").

    With no arguments every device goes on the model axis (tensor parallelism, as the release).
    The three sizes must multiply to the number of devices; given a `config`, they must also
    split the model evenly (see `check_mesh`).
    """
    devices = list(jax.devices() if devices is None else devices)
    for name, value in (("data", data), ("model", model), ("expert", expert)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise MeshError(f"make_mesh: {name} must be a positive integer, got {value!r}")
    if model is None:
        if len(devices) % (data * expert):
            raise MeshError(f"make_mesh: {len(devices)} devices cannot be split into data={data} × "
                            f"expert={expert} groups")
        model = len(devices) // (data * expert)
    if data * expert * model != len(devices):
        raise MeshError(f"make_mesh: data={data} × expert={expert} × model={model} = {data * expert * model} "
                        f"devices, but {len(devices)} are visible (pass devices=[...] to use fewer)")
    if config is not None:
        check_mesh(config, {DATA: data, EXPERT: expert, MODEL: model})
    # Auto axes: jit propagates shardings itself (jax.make_mesh would default to Explicit).
    return jax.make_mesh((data, expert, model), AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _axis_sizes(mesh: Mesh | dict[str, int]) -> dict[str, int]:
    """Size of each of our axes (1 for an axis the mesh does not have)."""
    shape = mesh if isinstance(mesh, dict) else dict(mesh.shape)
    return {name: shape.get(name, 1) for name in AXES}


# ---- partition rules --------------------------------------------------------------------------------

# (pattern matched against the end of the dotted parameter path, how its dimensions are split).
# An int8 matrix's `scales` [..., blocks, out] follow their weight [..., in, out]; see `partition_spec`.
PARAMETER_RULES: tuple[tuple[str, P], ...] = (
    # [V, D] embedding, reused as the output projection: width over model, whole vocabulary on each device
    (r"in_out_embed", P(None, MODEL)),
    # [D, H·K] query / key / value: column parallel, each device computes whole heads
    (r"multi_head_attention\.(query|key|value)\.w", P(None, MODEL)),
    # [H·K, D] attention output: row parallel, the devices' partial sums are added (all-reduce)
    (r"multi_head_attention\.linear\.w", P(MODEL, None)),
    # [E, D, F] expert gate and value: experts over `expert`, FFN columns over `model`
    (r"moe\.experts\.(linear|linear_v)\.w", P(EXPERT, None, MODEL)),
    # [E, F, D] expert down projection: experts over `expert`, FFN rows over `model`
    (r"moe\.experts\.linear_1\.w", P(EXPERT, MODEL, None)),
    # small float32 tensors, copied to every device: router [D, E], RMSNorm scales [D]
    (r"moe\.router\.w", P()),
    (r"rms_norm(_\d+)?\.scale", P()),
)

# Activations and the KV cache: the batch over data; the cache's key/value heads over model, like the
# key/value projections that produce them. (Inside the model, jit propagates the rest.)
ACTIVATION_RULES: dict[str, P] = {
    "tokens": P(DATA, None),  # [B, T]
    "residual": P(DATA, None, None),  # [B, T, D]
    "kv_cache.k": P(DATA, None, MODEL, None),  # [B, S, KV, K]
    "kv_cache.v": P(DATA, None, MODEL, None),  # [B, S, KV, K]
    "kv_cache.key_mask": P(DATA, None),  # [B, S]
    "kv_cache.step": P(DATA),  # [B]
}


def _dotted(path) -> str:
    return ".".join(str(part) for part in path)


def _rule(path: str) -> P | None:
    for pattern, spec in PARAMETER_RULES:
        if re.search(rf"(^|\.){pattern}$", path):
            return spec
    return None


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh | dict[str, int]) -> P:
    """`spec` padded to the rank, copying (None) each dimension its axis does not divide evenly
    (or whose axis the mesh does not have)."""
    sizes = dict(mesh) if isinstance(mesh, dict) else dict(mesh.shape)
    entries = list(spec) + [None] * (len(shape) - len(spec))
    return P(*[axis if axis in sizes and dim % sizes[axis] == 0 else None
               for axis, dim in zip(entries, shape, strict=True)])


def partition_spec(path, shape: tuple[int, ...], mesh: Mesh | dict[str, int]) -> P:
    """The PartitionSpec of the parameter at `path` (tuple or dotted string) with `shape` on `mesh`
    (a Mesh, or axis sizes such as {"model": 8}).

    Block scales [..., blocks, out] take their weight's spec: the out dimension is split like the
    weight's columns, and the blocks dimension like the weight's rows *when the axis divides the
    number of blocks* (model axis 1, 2, 4 or 8 for the release's 8 blocks: each device then holds
    exactly the scales of its rows). Otherwise the scales are copied and jit picks each device's
    rows; the arithmetic is the same either way. Unknown parameters are copied to every device.
    """
    dotted = path if isinstance(path, str) else _dotted(path)
    if dotted.endswith(".scales"):
        dotted = dotted[: -len("scales")] + "w"
    spec = _rule(dotted)
    return _fit(P() if spec is None else spec, tuple(shape), mesh)


def param_sharding(path, shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, partition_spec(path, shape, mesh))


# ---- placing parameters ---------------------------------------------------------------------------

def abstract_model(config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32) -> Grok:
    """What nnx.eval_shape(lambda: Grok(config, dtype=..., param_dtype=...)) gives (shapes and dtypes,
    no memory), built from one traced layer copied num_layers times.

    Tracing the whole constructor takes time quadratic in the layer count (flax 0.12 inspects each
    traced RNG-counter update against the whole trace so far): 150 s for Grok-1's 64 layers on a
    2-core machine, against about 1 s this way. The layers are identical in structure, so copies of
    the first are what tracing them all would give (tests/test_sharding.py compares the two).
    """
    one_layer = dataclasses.replace(config, num_layers=1)
    model = nnx.eval_shape(lambda: Grok(one_layer, dtype=dtype, param_dtype=param_dtype))
    first = model.decoder_layers[0]
    model.decoder_layers = nnx.List([first] + [copy.deepcopy(first) for _ in range(config.num_layers - 1)])
    for _, node in nnx.iter_graph(model):  # the modules that keep the config get the real one
        if isinstance(node, nnx.Module) and getattr(node, "config", None) == one_layer:
            node.config = config
    return model


def place(path, shape: tuple[int, ...], read_slice: Callable[[tuple], np.ndarray], mesh: Mesh | None = None
          ) -> jax.Array:
    """One parameter as a jax.Array laid out by the rules, built from the slices its devices hold.

    `read_slice(index)` returns the host array for `index` (a tuple of slices). Only the devices of
    this process are asked for, so with several processes (jax.distributed) each one reads just its
    own slices, and a slice is copied to its device and dropped before the next is read.
    Without a mesh, the whole array goes to the default device.
    """
    if mesh is None:
        return jax.device_put(read_slice(tuple(slice(None) for _ in shape)))
    return jax.make_array_from_callback(tuple(shape), param_sharding(path, shape, mesh), read_slice)


def array_slices(array: np.ndarray, dtype) -> Callable[[tuple], np.ndarray]:
    """read_slice for an array already on the host (or memory-mapped): its slice, cast to dtype."""
    return lambda index: np.asarray(array[index], dtype=dtype)


def dequantized_slices(value: QuantizedWeight8bit, dtype) -> Callable[[tuple], np.ndarray]:
    """read_slice that dequantises only the requested slice, one leading index (expert) at a time.

    weight [..., in, out] int8, scales [..., blocks, out]: row r of the input uses scale row
    r // (in / blocks), so any slice of rows finds its own scales whatever the device count. The
    product is exact in float32 and rounded once to dtype, as `quant.dequantize` does.
    """
    weight, scales = value.weight, np.asarray(value.scales, np.float32)  # scales are small: convert once
    size_in, blocks = weight.shape[-2], scales.shape[-2]

    def read(index: tuple) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (weight.ndim - len(index))
        rows = np.arange(*index[-2].indices(size_in)) // (size_in // blocks)  # scale row of each weight row
        lead = [range(*s.indices(n)) for s, n in zip(index[:-2], weight.shape[:-2], strict=True)]
        out = np.empty([len(r) for r in lead] + [len(rows), len(range(*index[-1].indices(weight.shape[-1])))],
                       dtype)
        for position in np.ndindex(*out.shape[:-2]):  # one expert at a time keeps the float32 temporary small
            at = tuple(r[i] for r, i in zip(lead, position, strict=True))
            w = np.asarray(weight[at + index[-2:]], np.float32)  # [r, o]
            s = scales[at + (rows, index[-1])]  # [r, o]
            out[position] = w * s
        return out

    return read


def tell_model_the_mesh(model: nnx.Module, mesh: Mesh | None) -> nnx.Module:
    """Give the model the mesh its weights are split over (a mesh of several devices only).

    Grok then keeps its residual stream whole along the width on every device (ACTIVATION_RULES
    "residual"): left to itself, jit splits it like the embedding's columns, and every RMSNorm,
    the router and each attention input then cost a collective of their own (~9 a layer instead of
    2, which dominated decode on 4 GPUs). The MoE runs its Pallas decode kernel, which jit cannot
    split by itself (it would gather every expert stack onto every device), with shard_map on
    each device's slice (moe._kernel_ffn).
    """
    if mesh is not None and mesh.devices.size > 1:
        model.set_attributes(mesh=mesh, raise_if_not_found=False)
    return model


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Move an in-memory model's parameters onto `mesh` by the rules (in place; returns the model)."""
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    for path, variable in flat:
        value = variable.get_value()
        variable.set_value(jax.device_put(value, param_sharding(path, value.shape, mesh)))
    nnx.update(model, nnx.from_flat_state(flat))
    return tell_model_the_mesh(model, mesh)


def activation_sharding(name: str, shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    """The layout of activation `name` (ACTIVATION_RULES) with `shape` on `mesh`."""
    return NamedSharding(mesh, _fit(ACTIVATION_RULES[name], shape, mesh))


def shard_tokens(tokens, mesh: Mesh) -> jax.Array:
    """Token ids [B, T] with the batch split over data (copied when B does not divide evenly)."""
    tokens = np.asarray(tokens)
    return jax.device_put(tokens, activation_sharding("tokens", tokens.shape, mesh))


def shard_cache(cache: list, mesh: Mesh) -> list:
    """A KV cache (one KVCache per layer) laid out by ACTIVATION_RULES: batch over data, heads over model."""
    def put(layer):
        return type(layer)(**{name: jax.device_put(getattr(layer, name),
                                                   activation_sharding(f"kv_cache.{name}", getattr(layer, name).shape,
                                                                        mesh))
                              for name in ("k", "v", "key_mask", "step")})

    return [put(layer) for layer in cache]
