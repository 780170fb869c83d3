"""Assembling a Grok from stored weights and placing it on a mesh: the one place that does it.

The formats (`checkpoint.py` for the release, `hf.py` for Hugging Face safetensors) say where each
parameter is in their files and check what they read; this module builds the model abstractly
(`Grok.abstract`: shapes only, nothing allocated twice), asks each parameter only for the slices
its devices hold (`place`), and returns the model once every parameter is in place.

With a mesh (`grok_mini.make_mesh`) every parameter is split over the devices by the rules of
params.py / sharding.py: host memory stays near two parameters' slices (the one being read and the
one being copied), and a process of a multi-host run (jax.distributed) reads only the parts of each
file that its own devices hold.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from grok_mini import checkpoint, hf
from grok_mini.config import GrokConfig
from grok_mini.memory import require_memory
from grok_mini.model import Grok
from grok_mini.params import param_row
from grok_mini.quant import Int4, QuantizedWeight8bit, quantize, requantize_int4
from grok_mini.sharding import check_mesh, param_sharding

__all__ = ["load_checkpoint", "load_hf", "shard_model", "place", "array_slices", "dequantized_slices",
           "requantized_int4", "quantize_model", "stored_format"]

ReadSlice = Callable[[tuple], np.ndarray]  # index (a tuple of slices) → that part of the parameter, on the host


def place(path, shape: tuple[int, ...], read_slice: ReadSlice, mesh: Mesh | None = None) -> jax.Array:
    """One parameter as a jax.Array laid out by the rules, built from the slices its devices hold.

    Only the devices of this process are asked for, so with several processes (jax.distributed)
    each one reads just its own slices, and a slice is copied to its device and dropped before the
    next is read. Without a mesh, the whole array goes to the default device.
    """
    if mesh is None:
        return jax.device_put(read_slice(tuple(slice(None) for _ in shape)))
    return jax.make_array_from_callback(tuple(shape), param_sharding(path, shape, mesh), read_slice)


def array_slices(array: np.ndarray, dtype) -> ReadSlice:
    """read_slice for an array already on the host (or memory-mapped): its slice, cast to dtype."""
    return lambda index: np.asarray(array[index], dtype=dtype)


def dequantized_slices(value: QuantizedWeight8bit, dtype) -> ReadSlice:
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


@functools.cache
def _requantizer(group_size: int, out_shardings):
    """One compiled re-quantisation per group size and output layout (not one per tensor)."""
    return jax.jit(functools.partial(requantize_int4, group_size=group_size), out_shardings=out_shardings)


def requantized_int4(path, value: QuantizedWeight8bit, group_size: int, mesh: Mesh | None = None
                     ) -> tuple[jax.Array, jax.Array]:
    """The release's int8 matrix at `path` as int4 (packed uint8, bfloat16 scales) laid out by the rules.

    Its int8 weight and scales are placed slice by slice as for an int8 model (each device reads
    only its own slices), then re-quantised on the devices: numpy on the host would take most of an
    hour over Grok-1's 309 B expert weights. The int8 copy is dropped when this returns.
    """
    scales_path = (*path[:-1], "scales")
    weight = place(path, value.weight.shape, array_slices(value.weight, np.int8), mesh)
    scales = place(scales_path, value.scales.shape, array_slices(value.scales, ml_dtypes.bfloat16), mesh)
    out = None
    if mesh is not None:
        packed, new_scales = jax.eval_shape(lambda w, s: requantize_int4(w, s, group_size), weight, scales)
        out = (param_sharding(path, packed.shape, mesh), param_sharding(scales_path, new_scales.shape, mesh))
    return _requantizer(group_size, out)(weight, scales)


def _assemble(config: GrokConfig, parameters: Iterable[list[tuple[tuple, Callable[[np.dtype], ReadSlice]]]], *,
              dtype, param_dtype, mesh: Mesh | None, options: dict) -> Grok:
    """A Grok whose every parameter comes from `parameters`: groups of (path, reader), where
    reader(dtype of the model's variable) gives that variable's read_slice (or the jax.Array itself,
    already placed: int4). A group is what one file holds (an int8 weight and its scales); the next
    group is read while the last is copied."""
    abstract = Grok.abstract(config, dtype=dtype, param_dtype=param_dtype, mesh=mesh, **options)
    graphdef, state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(state))
    previous: list = []
    for group in parameters:
        placed = []
        for path, reader in group:
            variable = flat[path]
            target = variable.get_value()  # abstract: shape and dtype
            source = reader(target.dtype)
            variable.set_value(source if isinstance(source, jax.Array) else place(path, target.shape, source, mesh))
            placed.append(variable.get_value())
        # Copies to a GPU run asynchronously and keep their host slices alive until done: without
        # this wait the reading runs ahead of them and host memory fills up with pending files.
        jax.block_until_ready(previous)
        previous = placed
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def load_checkpoint(path: str | Path, config: GrokConfig, *, dtype=jnp.bfloat16, quantized: bool | Int4 = False,
                    mesh: Mesh | None = None, check_finite: bool = True, **options) -> Grok:
    """Read a release-format checkpoint (`path` holds `ckpt-0/`) into a Grok with `dtype` activations.

    quantized=False dequantises the matrices once, in float32, and stores them in `dtype` (so
    bfloat16 gives the release's own int8 × bfloat16-scale product); quantized=True keeps them int8
    with their scales (~1 byte a parameter); quantized=quant.Int4(group_size) re-quantises the expert
    matrices (and the attention ones if Int4.attention) from the release's int8 to int4 in groups of
    group_size input rows (~0.53 byte a parameter at 64; `requantized_int4`), the rest stays int8.
    Norms and router stay float32, and so does the embedding unless the option embedding_dtype
    (`Grok`) asks for `dtype`: the same logits, half its memory in bfloat16. With a
    `mesh`, files are memory-mapped and each device gets only its slice (dequantised on the host if
    asked). NaN or infinite weights or scales are an error unless check_finite=False. Other keyword
    arguments are the model's own options (`Grok`: dispatch, int8_kernel, ...).
    """
    if mesh is not None:
        check_mesh(config, mesh)

    int4 = quantized if isinstance(quantized, Int4) else None

    def groups():
        for tensor, value in checkpoint.iter_release_tensors(path, config, mapped=mesh is not None,
                                                             check_finite=check_finite):
            if isinstance(value, QuantizedWeight8bit) and int4 and (int4.attention or "experts" in tensor.param):
                pair = functools.cache(lambda p=tensor.param, v=value: requantized_int4(p, v, int4.group_size, mesh))
                yield [(tensor.param, lambda dtype, pair=pair: pair()[0]),
                       ((*tensor.param[:-1], "scales"), lambda dtype, pair=pair: pair()[1])]
            elif isinstance(value, QuantizedWeight8bit) and quantized:
                yield [(tensor.param, lambda dtype, v=value.weight: array_slices(v, dtype)),
                       ((*tensor.param[:-1], "scales"), lambda dtype, v=value.scales: array_slices(v, dtype))]
            elif isinstance(value, QuantizedWeight8bit):  # int8 dequantised slice by slice
                yield [(tensor.param, lambda dtype, v=value: dequantized_slices(v, dtype))]
            else:  # float32 as it is
                yield [(tensor.param, lambda dtype, v=value: array_slices(v, dtype))]

    param_dtype = int4 or (jnp.int8 if quantized else dtype)
    return _assemble(config, groups(), dtype=dtype, param_dtype=param_dtype, mesh=mesh, options=options)


def load_hf(path: str | Path, config: GrokConfig | None = None, *, dtype=jnp.bfloat16, mesh: Mesh | None = None,
            check_finite: bool = True, **options) -> Grok:
    """Read HF safetensors (hpcai-tech names) into a Grok with `dtype` activations and matrices.

    config defaults to the folder's config.json. Embedding, norms and router are kept in float32
    (as the release). Every tensor is read slice by slice, so with a `mesh` each device gets only
    its part and host memory stays near one slice. check_finite: a NaN or infinite weight is an
    error naming the file and the tensor (one pass over each slice as it is read; False skips it).
    Other keyword arguments are the model's own options (`Grok`).
    """
    path = Path(path)
    config = hf.config_from_hf(path) if config is None else config
    if mesh is not None:
        check_mesh(config, mesh)
    weights = config.weight_bytes("fp32" if jnp.dtype(dtype) == jnp.float32 else "bf16")
    require_memory(weights, f"{path}: the model ({config.num_params:,} parameters)",
                   None if mesh is None else mesh.devices.flat)
    readers = hf.open_export(path, config, check_finite=check_finite)  # checks names and shapes first
    return _assemble(config, ([item] for item in readers), dtype=dtype, param_dtype=dtype, mesh=mesh, options=options)


def stored_format(model: Grok):
    """The param_dtype the model's matrices were built with: a float dtype, jnp.int8, or quant.Int4."""
    layer = model.decoder_layers[0]
    experts = layer.moe.experts
    if experts.linear.scales is None:
        return experts.linear.w.get_value().dtype
    if experts.linear.w.get_value().dtype != jnp.uint8:
        return jnp.int8
    # The nominal group size: the largest group in use (a matrix whose rows it does not divide has smaller ones).
    groups = [2 * linear.w.shape[-2] // linear.scales.shape[-2] for linear in (experts.linear, experts.linear_1)]
    attention = layer.multi_head_attention.query.w.get_value().dtype == jnp.uint8
    return Int4(max(groups), attention=attention)


def shard_model(model: Grok, mesh: Mesh) -> Grok:
    """The model rebuilt for `mesh` with its parameters moved there by the rules (the MoE dispatch is
    chosen for the mesh; its other options are kept)."""
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    moe = model.decoder_layers[0].moe
    abstract = Grok.abstract(model.config, dtype=model.dtype, param_dtype=stored_format(model),
                             mesh=mesh, capacity_factor=moe.capacity_factor, tile_rows=moe.tile_rows,
                             int8_kernel=moe.int8_kernel, embedding_dtype=model.in_out_embed.get_value().dtype)
    graphdef, state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(state))
    for path, variable in params:
        value = variable.get_value()
        flat[path].set_value(jax.device_put(value, param_sharding(path, value.shape, mesh)))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def quantize_model(model: Grok, quantized: bool | Int4 = True) -> Grok:
    """A float model with its matrices quantised as a release user would have them: int8 by the
    release's recipe (quant.quantize, the release's blocks from params.py), then, for an Int4, the
    expert matrices (and attention if asked) re-quantised from that int8. Embedding, norms and router
    are kept as they are (float32). For a trained toy or run; the model's MoE options are kept."""
    moe = model.decoder_layers[0].moe
    param_dtype = quantized if isinstance(quantized, Int4) else jnp.int8
    abstract = Grok.abstract(model.config, dtype=model.dtype, param_dtype=param_dtype, mesh=model.mesh,
                             dispatch=moe.dispatch, capacity_factor=moe.capacity_factor, tile_rows=moe.tile_rows,
                             int8_kernel=moe.int8_kernel, embedding_dtype=model.in_out_embed.get_value().dtype)
    graphdef, state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(state))

    def put(path, value):
        value = np.asarray(value, flat[path].get_value().dtype)
        flat[path].set_value(jnp.asarray(value) if model.mesh is None
                             else jax.device_put(value, param_sharding(path, value.shape, model.mesh)))

    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = np.asarray(variable.get_value(), np.float32)
        scales_path = (*path[:-1], "scales")
        if scales_path not in flat:  # embedding, norms, router
            put(path, value)
            continue
        int8 = quantize(value, param_row(path).blocks)
        weight, scales = int8.weight, int8.scales
        if flat[path].get_value().dtype == jnp.uint8:
            weight, scales = requantize_int4(weight, scales, quantized.group_size)
        put(path, weight)
        put(scales_path, scales)
    return nnx.merge(graphdef, nnx.from_flat_state(flat))
