"""The release checkpoint format: one pickle per parameter in `ckpt-0/`, int8 matrices with block scales.

File i holds the i-th leaf of the official parameter tree, and that tree is ordered by sorted module
path, so `decoder_layer_10` comes before `decoder_layer_2` (see `release_layout`). The seven matrices
of each layer are int8 with bfloat16 scales: one scale per output column, and for the two matrices
whose input dimension the release shards 8 ways (attention `linear`, expert `linear_1`) one per
(input block of in/8 rows, output column).

Pickle can run arbitrary code, and even numpy's own array rebuilder can be made to read process
memory, so the files are never unpickled: `tensor_pickle` interprets them and builds only plain
numeric arrays itself.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from grok_mini.config import GrokConfig
from grok_mini.model import Grok
from grok_mini.params import PARAMS
from grok_mini.quant import QuantizedWeight8bit, dequantize, quantize
from grok_mini.tensor_pickle import CheckpointError, read_pickled_tensor

__all__ = ["CheckpointError", "QuantizedWeight8bit", "ReleaseTensor", "release_layout", "read_tensor",
           "iter_release_tensors", "dequantize", "quantize", "save_checkpoint"]

CHECKPOINT_DIR = "ckpt-0"


# ---- which file holds which parameter ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ReleaseTensor:
    """One file of the release: its index, official path, our parameter path, shape and int8 blocks."""

    index: int
    path: str  # e.g. "transformer/decoder_layer_10/moe/linear/w"
    param: tuple  # path into nnx.state(model), e.g. ("decoder_layers", 10, "moe", "experts", "linear", "w")
    shape: tuple[int, ...]
    blocks: int | None  # None: float32; else int8 with scales [..., blocks, out]

    @property
    def filename(self) -> str:
        return f"tensor{self.index:05d}_000"


def release_layout(config: GrokConfig) -> list[ReleaseTensor]:
    """Every parameter file of a release-format checkpoint of `config`, in file order.

    The official loader flattens a dict keyed by module path, and JAX sorts dict keys as strings:
    the order is lexicographic, so layers come 0, 1, 10, 11, ..., 19, 2, 20, ...
    """
    shapes = {path: variable.shape for path, variable in
              nnx.to_flat_state(nnx.state(Grok.abstract(config, dtype=jnp.float32), nnx.Param))}
    entries = []
    for row in PARAMS:
        for layer in range(config.num_layers) if row.per_layer else [None]:
            module, name = row.release.format(n=layer).rsplit("/", 1)
            ours = tuple(row.ours.split("."))
            entries.append((module, name, ours if layer is None else ("decoder_layers", layer, *ours), row.blocks))
    entries.sort(key=lambda entry: (entry[0], entry[1]))  # as JAX sorts the official tree: module, then name
    return [ReleaseTensor(i, f"{module}/{name}", param, shapes[param], blocks)
            for i, (module, name, param, blocks) in enumerate(entries)]


# ---- reading one file safely ------------------------------------------------------------------

def read_tensor(path: str | Path, *, mapped: bool = False, max_bytes: int | None = None,
                holds: str = "the tensor it holds") -> np.ndarray | QuantizedWeight8bit:
    """One release file → a numpy array or a QuantizedWeight8bit, never anything else.

    The file is interpreted, not unpickled (`tensor_pickle`): only plain numeric arrays are built,
    by us, from bytes whose length matches their shape. mapped=True leaves large arrays in the file
    as read-only memory maps, so a device's slice reads only the pages it covers (a single process
    needs every page, so the kernel is asked to read the file ahead).
    """
    return read_pickled_tensor(path, mapped=mapped, max_bytes=max_bytes, holds=holds,
                               read_ahead=mapped and jax.process_count() == 1)


def _most_bytes(tensor: ReleaseTensor) -> int:
    """The largest a file of `tensor` can sensibly be: its elements at 4 bytes (float32, so that a float
    where int8 belongs still reaches the clearer dtype error), its scales, and the pickle's framing."""
    scales = 0 if tensor.blocks is None else math.prod((*tensor.shape[:-2], tensor.blocks, tensor.shape[-1]))
    return 4 * (math.prod(tensor.shape) + scales) + (64 << 10)


def _all_finite(array: np.ndarray) -> bool:
    """No NaN or ±inf, checked a slab at a time (a memory-mapped embedding is gigabytes)."""
    if array.ndim == 0 or array.shape[0] == 0:
        return bool(np.isfinite(array).all())
    rows = max(1, (16 << 20) // max(1, array[0].size))
    return all(np.isfinite(array[i:i + rows]).all() for i in range(0, array.shape[0], rows))


_SCALE_DTYPES = (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32))
_FINITE_HINT = " (a damaged file? check_finite=False loads it anyway)"


def _check(tensor: ReleaseTensor, value, source: Path, check_finite: bool = True) -> None:
    """Raise CheckpointError unless `value` has the shape, dtype and scales `tensor` needs, all finite."""
    where = f"{source}: parameter {tensor.path}"
    if tensor.blocks is None:
        if not isinstance(value, np.ndarray) or value.dtype != np.float32:
            found = type(value).__name__ if not isinstance(value, np.ndarray) else value.dtype
            raise CheckpointError(f"{where}: expected a float32 array, found {found}")
        if value.shape != tensor.shape:
            raise CheckpointError(f"{where}: expected shape {tensor.shape}, found {value.shape}")
        if check_finite and not _all_finite(value):
            raise CheckpointError(f"{where}: holds NaN or infinite values{_FINITE_HINT}")
        return
    if not isinstance(value, QuantizedWeight8bit):
        raise CheckpointError(f"{where}: expected a QuantizedWeight8bit (int8 + scales), found {type(value).__name__}")
    weight, scales = value.weight, value.scales
    if not isinstance(weight, np.ndarray) or weight.dtype != np.int8 or weight.shape != tensor.shape:
        found = getattr(weight, "shape", None), getattr(weight, "dtype", type(weight).__name__)
        raise CheckpointError(f"{where}: expected int8 weight of shape {tensor.shape}, found {found}")
    expected = (*tensor.shape[:-2], tensor.blocks, tensor.shape[-1])
    if not isinstance(scales, np.ndarray) or scales.shape != expected or tensor.shape[-2] % tensor.blocks:
        found = getattr(scales, "shape", type(scales).__name__)
        raise CheckpointError(f"{where}: scales do not fit the weight: expected shape {expected}, found {found}")
    if scales.dtype not in _SCALE_DTYPES:
        raise CheckpointError(f"{where}: scales are {scales.dtype}, expected bfloat16")
    if check_finite and not _all_finite(scales):
        raise CheckpointError(f"{where}: scales hold NaN or infinite values{_FINITE_HINT}")


# ---- the model <-> the checkpoint directory -------------------------------------------------------

def _tensor_files(path: Path, config: GrokConfig) -> tuple[Path, list[ReleaseTensor]]:
    directory = path / CHECKPOINT_DIR
    if not directory.is_dir():
        hint = " (pass the folder that contains ckpt-0, not ckpt-0 itself)" if path.name == CHECKPOINT_DIR else ""
        raise CheckpointError(f"{path}: no {CHECKPOINT_DIR}/ folder here{hint}")
    layout = release_layout(config)
    expected = {tensor.filename for tensor in layout}
    present = {p.name for p in directory.iterdir() if p.name.startswith("tensor")}
    if missing := sorted(expected - present):
        raise CheckpointError(f"{directory}: {len(missing)} of {len(layout)} tensor files missing "
                              f"(first: {missing[0]}); is the download complete, and is the config right?")
    if extra := sorted(present - expected):
        raise CheckpointError(f"{directory}: {len(extra)} tensor files this config does not have "
                              f"(first: {extra[0]}); does num_layers={config.num_layers} match the checkpoint?")
    return directory, layout


def iter_release_tensors(path: str | Path, config: GrokConfig, *, mapped: bool = False, check_finite: bool = True
                         ) -> Iterator[tuple[ReleaseTensor, np.ndarray | QuantizedWeight8bit]]:
    """Yield (tensor, value) for every file, checked against the config, one file in memory at a time.

    mapped=True leaves large arrays on disk as memory maps (see `read_tensor`). check_finite=False
    skips the NaN/inf check (on by default: one pass over the float data).
    """
    directory, layout = _tensor_files(Path(path), config)
    for tensor in layout:
        source = directory / tensor.filename
        value = read_tensor(source, mapped=mapped, max_bytes=_most_bytes(tensor),
                            holds=f"parameter {tensor.path} of shape {tensor.shape}")
        _check(tensor, value, source, check_finite)
        yield tensor, value


def _pickle_release(value) -> bytes:
    """Pickle as the release does: QuantizedWeight8bit under the module name `__main__`."""
    main = sys.modules["__main__"]
    previous = getattr(main, "QuantizedWeight8bit", None)
    original_module = QuantizedWeight8bit.__module__
    QuantizedWeight8bit.__module__ = "__main__"
    main.QuantizedWeight8bit = QuantizedWeight8bit
    try:
        return pickle.dumps(value, protocol=4)
    finally:
        QuantizedWeight8bit.__module__ = original_module
        if previous is None:
            del main.QuantizedWeight8bit
        else:
            main.QuantizedWeight8bit = previous


def refuse_variant(config: GrokConfig, fmt: str) -> None:
    """A CheckpointError for a config whose lab switches differ from Grok-1's (config.Variant)."""
    if changes := config.variant.changes():
        raise CheckpointError(f"{fmt} holds Grok-1's architecture only; this model is a lab variant "
                              f"({', '.join(f'{k}={v!r}' for k, v in changes.items())}): save it with the trainer's "
                              "Orbax checkpoints instead")


def save_checkpoint(model: Grok, path: str | Path) -> Path:
    """Write `model` in the release layout under `path/ckpt-0/`, matrices quantised to int8.

    Written into a temporary folder beside the target and renamed into place at the end, so a
    failure midway leaves any previous checkpoint at `path` untouched. A lab variant is refused: the
    format describes Grok-1's architecture only, and a reader would load it as Grok-1.
    """
    refuse_variant(model.config, "the release format")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    flat = {path: variable.get_value() for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    staging = Path(tempfile.mkdtemp(prefix=".ckpt-0.", dir=path))
    try:
        for tensor in release_layout(model.config):
            array = np.asarray(flat[tensor.param])
            scales = flat.get((*tensor.param[:-1], "scales"))
            if tensor.blocks is None:
                value = array
            elif scales is not None:  # already int8: write it as it is
                value = QuantizedWeight8bit(weight=array, scales=np.asarray(scales))
            else:
                value = quantize(array.astype(np.float32), tensor.blocks)
            with open(staging / tensor.filename, "wb") as file:
                file.write(_pickle_release(value))
        target = path / CHECKPOINT_DIR
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=".ckpt-0.old.", dir=path))
            os.replace(target, old / CHECKPOINT_DIR)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
