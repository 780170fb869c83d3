"""Spreading Grok over many devices: a named device mesh and one partition rule per parameter.

The mesh has three named axes (a device grid of data × expert × model):

  data    copies of the whole model, each serving its own slice of the batch
  expert  the experts split into groups (expert parallelism); everything else is copied along it
  model   tensor parallelism as in the release: heads, expert FFN width, embedding width split

A parameter's PartitionSpec names, for each of its dimensions, the mesh axis it is split over (or
None: every device holds all of it). jax.jit compiles the model for those shardings and inserts the
communication itself, so the model code stays the plain single-device code.

This module is a leaf: it knows the mesh and the rules (from `params.py`), not the model.
Building a model for a mesh (`Grok(config, mesh=mesh)`, `Grok.abstract`) and putting weights on it
(`load.py`) happen elsewhere. Given its mesh, the model picks the MoE dispatch that suits it (the
all-experts "dense" dispatch on an expert axis, where each device applies its own experts and the
outputs are summed; the sparse one would gather every expert stack onto every device), runs its
GPU decode kernel on each device's own slice under shard_map, and keeps the residual stream whole
along the width (two all-reduces a layer).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from grok_mini.config import GrokConfig
from grok_mini.params import DATA, EXPERT, MODEL, PARAMS, param_row

__all__ = ["MeshError", "AXES", "DATA", "EXPERT", "MODEL", "PARAMETER_RULES", "ACTIVATION_RULES", "make_mesh",
           "check_mesh", "partition_spec", "param_sharding", "shard_tokens", "shard_cache", "activation_sharding"]

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

# Each parameter's split, from the table in params.py: {our dotted path: PartitionSpec}.
PARAMETER_RULES: dict[str, P] = {row.ours: P(*row.split) for row in PARAMS}

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
    row = param_row(path)
    return _fit(P() if row is None else P(*row.split), tuple(shape), mesh)


def param_sharding(path, shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, partition_spec(path, shape, mesh))


# ---- activations ------------------------------------------------------------------------------------

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
