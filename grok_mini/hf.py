"""The Hugging Face format: safetensors files with the hpcai-tech Grok-1 names (model_type "grok-1").

What changes between the release layout and this one (see reference/grok1-facts.md §7):
  * names: `decoder_layer_N/multi_head_attention/query` → `model.layers.N.attn.q_proj.weight`, ...;
  * torch's nn.Linear stores a matrix as [out, in], JAX's as [in, out]: every matrix is transposed;
  * the release keeps the 8 experts of a layer in one [E, in, out] tensor, HF in 8 tensors
    `model.layers.N.moe_block.experts.E.{linear,linear_v,linear_1}.weight`;
  * no int8: matrices are stored dequantised, in bfloat16 (as the hpcai-tech port) or float32;
  * the output projection is tied to `model.embed_tokens.weight`, so no `lm_head.weight` is written
    (the config says tie_word_embeddings); one found on import must equal the embedding.

`save_hf(model, dir)` and `release_to_hf(release_dir, config, dir)` write `config.json`, one or more
`model-0000i-of-0000n.safetensors` and, when there are several, `model.safetensors.index.json`.
`open_export(dir, config)` checks an export and gives a reader per parameter, from which
`load.load_hf` assembles a Grok slice by slice (and onto a mesh, like load_checkpoint).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from grok_mini.checkpoint import CheckpointError, iter_release_tensors, refuse_variant, release_layout
from grok_mini.config import CONFIG_MAX_BYTES, ConfigError, GrokConfig, shown
from grok_mini.files import check_regular, read_json
from grok_mini.model import Grok
from grok_mini.params import PER_LAYER, TOP_LEVEL
from grok_mini.quant import QuantizedWeight8bit, dequantize

__all__ = ["HFTensor", "hf_layout", "hf_config", "config_from_hf", "save_hf", "release_to_hf", "open_export"]

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

@dataclasses.dataclass(frozen=True)
class HFTensor:
    """One HF tensor: its name, our parameter it comes from (and which expert of the stack), its HF shape."""

    name: str  # e.g. "model.layers.3.moe_block.experts.5.linear_1.weight"
    param: tuple  # e.g. ("decoder_layers", 3, "moe", "experts", "linear_1", "w")
    expert: int | None  # index into our [E, in, out] stack, or None
    shape: tuple[int, ...]  # HF's shape: [out, in] for a matrix

    @property
    def transposed(self) -> bool:
        """Our matrices ("w", [in, out]) are stored transposed; embedding and norm scales as they are."""
        return self.param[-1] == "w"


def hf_layout(config: GrokConfig) -> list[HFTensor]:
    """Every HF tensor of a Grok with `config`: the embedding, layer by layer, the final norm.

    Within a layer the rows of params.PARAMS in order, each expert stack's E tensors together (the
    stack is then fetched once). Matrices are [out, in] in HF, [in, out] (per expert) in ours.
    """
    shapes = {path: variable.shape for path, variable in
              nnx.to_flat_state(nnx.state(Grok.abstract(config, dtype=jnp.float32), nnx.Param))}

    def tensors(row, layer=None) -> list[HFTensor]:
        ours = tuple(row.ours.split("."))
        param = ours if layer is None else ("decoder_layers", layer, *ours)
        shape = shapes[param][-2:][::-1] if param[-1] == "w" else shapes[param]  # matrices transposed
        experts = range(config.num_experts) if row.per_expert else [None]
        return [HFTensor(row.hf.format(n=layer, e=e), param, e, tuple(shape)) for e in experts]

    first, last = TOP_LEVEL  # the embedding, the final norm
    layers = [t for n in range(config.num_layers) for row in PER_LAYER for t in tensors(row, n)]
    return tensors(first) + layers + tensors(last)


# ---- config.json ------------------------------------------------------------------------------------

def hf_config(config: GrokConfig, dtype=jnp.bfloat16) -> dict:
    """config.json in the hpcai-tech Grok1Config's field names (plus head_dim and widening_factor)."""
    refuse_variant(config, "the Hugging Face Grok-1 format")
    return {
        "architectures": ["Grok1ModelForCausalLM"],
        "model_type": "grok-1",
        "vocab_size": config.vocab_size,
        "hidden_size": config.emb_size,
        "intermediate_size": config.ffn_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_q_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.key_size,
        "widening_factor": config.widening_factor,
        "attn_output_multiplier": config.attn_output_multiplier,
        "embedding_multiplier_scale": config.embedding_multiplier_scale,
        "output_multiplier_scale": config.output_multiplier_scale,
        "max_attn_value": config.max_attn_val,
        "max_position_embeddings": config.sequence_len,
        "rms_norm_eps": config.rms_norm_eps,
        "pad_token_id": config.pad_token,
        "bos_token_id": 1,
        "eos_token_id": config.eos_token,
        "tie_word_embeddings": True,
        "num_experts": config.num_experts,
        "num_experts_per_tok": config.num_selected_experts,
        "torch_dtype": "bfloat16" if jnp.dtype(dtype) == jnp.bfloat16 else "float32",
    }


# Our field names as the HF config names them, so an error about a value names the file's field.
_HF_NAMES = {"vocab_size": "vocab_size", "emb_size": "hidden_size", "key_size": "head_dim",
             "num_q_heads": "num_attention_heads", "num_kv_heads": "num_key_value_heads",
             "num_layers": "num_hidden_layers", "num_experts": "num_experts",
             "num_selected_experts": "num_experts_per_tok", "sequence_len": "max_position_embeddings",
             "pad_token": "pad_token_id", "eos_token": "eos_token_id"}


def config_from_hf(values: dict | str | Path) -> GrokConfig:
    """A GrokConfig from an hpcai-tech style config.json (a dict, the file, or its folder).

    Anything wrong with it is a ConfigError that names the file and the HF field.
    """
    source = "config.json"
    if not isinstance(values, dict):
        path = Path(values)
        path = path / "config.json" if path.is_dir() else path
        source = str(path)
        try:
            values = read_json(path, "the HF config", CONFIG_MAX_BYTES)
        except OSError as error:
            raise ConfigError(str(error)) from None
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: the HF config must be a JSON object, got {type(values).__name__}")

    def integer(name: str, default=None):
        value = values.get(name, default)
        if value is None:
            raise ConfigError(f"{source}: the HF config has no {name!r} field")
        if not (isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigError(f"{source}: {name} must be an integer, got {shown(value)}")
        return value

    hidden, heads, ffn = integer("hidden_size"), integer("num_attention_heads"), integer("intermediate_size")
    if hidden < 1 or heads < 1:
        raise ConfigError(f"{source}: hidden_size={hidden} and num_attention_heads={heads} must be positive")
    # The official ffn formula int(w·D)·2//3 (rounded up to 8) inverted, unless the file says w.
    fields = dict(
        vocab_size=integer("vocab_size"), emb_size=hidden, key_size=integer("head_dim", hidden // heads),
        num_q_heads=heads, num_kv_heads=integer("num_key_value_heads"), num_layers=integer("num_hidden_layers"),
        widening_factor=values.get("widening_factor", ffn * 3 / (2 * hidden)), num_experts=integer("num_experts"),
        num_selected_experts=integer("num_experts_per_tok"), sequence_len=integer("max_position_embeddings"),
        pad_token=integer("pad_token_id", 0), eos_token=integer("eos_token_id", 2))
    for name in ("attn_output_multiplier", "embedding_multiplier_scale", "output_multiplier_scale"):
        if name not in values:
            raise ConfigError(f"{source}: the HF config has no {name!r} field")
        fields[name] = values[name]
    try:
        config = GrokConfig(**fields)
    except ConfigError as error:
        message = str(error).removeprefix("GrokConfig: ")
        for ours, theirs in _HF_NAMES.items():
            message = re.sub(rf"\b{ours}\b", theirs, message)
        raise ConfigError(f"{source}: {message}") from None
    if config.ffn_size != ffn:
        raise ConfigError(f"{source}: intermediate_size={ffn} is not what the Grok-1 formula gives for "
                          f"hidden_size={hidden} and widening_factor={config.widening_factor} ({config.ffn_size})")
    return config


# ---- writing ----------------------------------------------------------------------------------------

def _hf_value(tensor: HFTensor, value: np.ndarray | QuantizedWeight8bit, dtype) -> np.ndarray:
    """Our host value of tensor.param → the HF tensor: pick the expert, dequantise, transpose, cast."""
    if isinstance(value, QuantizedWeight8bit):
        weight, scales = value.weight, value.scales
        if tensor.expert is not None:
            weight, scales = weight[tensor.expert], scales[tensor.expert]
        array = dequantize(np.asarray(weight), np.asarray(scales), np.float32)
    else:
        array = np.asarray(value if tensor.expert is None else value[tensor.expert], np.float32)
    if tensor.transposed:
        array = array.T
    if array.shape != tensor.shape:
        raise CheckpointError(f"{tensor.name}: expected shape {tensor.shape}, got {array.shape}")
    return np.ascontiguousarray(array.astype(dtype))


def _is_export_file(name: str) -> bool:
    shard = re.fullmatch(r"model-\d+-of-\d+\.safetensors", name)
    return name in ("config.json", SINGLE_FILE, INDEX_FILE) or bool(shard)


def _check_replaceable(path: Path) -> None:
    """An export replaces its folder whole, so the folder may hold only an earlier export's files."""
    if not path.exists():
        return
    if not path.is_dir():
        raise CheckpointError(f"{path}: exists and is not a folder; the HF export is a folder")
    if others := sorted(p.name for p in path.iterdir() if not (p.is_file() and _is_export_file(p.name))):
        raise CheckpointError(f"{path}: holds {len(others)} entries that are not part of an HF export (first: "
                              f"{others[0]!r}); export into a new folder, an empty one or an earlier export")


def _replace_folder(staging: Path, path: Path) -> None:
    """Put the finished `staging` folder at `path`: the old folder moves aside, then goes."""
    if not path.exists():
        os.rename(staging, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.rename(path, old / path.name)
    try:
        os.rename(staging, path)
    except BaseException:
        os.rename(old / path.name, path)  # the previous export goes back where it was
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old)


def _fsync_folder(folder: Path) -> None:
    """Flush every file and then the folder itself, so a crash after the rename cannot leave empty shards."""
    for file in folder.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    if hasattr(os, "O_DIRECTORY"):  # POSIX; Windows cannot open a folder for fsync
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write(items: list[tuple[HFTensor, Callable[[], np.ndarray]]], path: Path, config: GrokConfig, dtype,
           max_shard_bytes: int) -> Path:
    """Write the tensors in order, shard by shard (host memory: one shard), plus config and index.

    Everything goes into a fresh staging folder beside `path`, which replaces `path` only once it
    is complete: a failure on the way (a bad release file, a full disk) leaves an earlier export
    there as it was, and a new export never mixes with an old one's shards or index.
    """
    itemsize = jnp.dtype(dtype).itemsize
    shards, size = [[]], 0
    for tensor, _ in items:
        nbytes = math.prod(tensor.shape) * itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor.name)
        size += nbytes
    n = len(shards)
    files = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    file_of = {name: file for file, names in zip(files, shards, strict=True) for name in names}
    last_of_shard = {names[-1] for names in shards}

    path = Path(path).resolve()  # a link to the export: replace what it points to, not the link
    _check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))  # ours alone
    try:
        (staging / "config.json").write_text(json.dumps(hf_config(config, dtype), indent=2) + "\n")
        pending, total = {}, 0
        for tensor, make in items:
            pending[tensor.name] = make()
            total += pending[tensor.name].nbytes
            if tensor.name in last_of_shard:
                save_file(pending, str(staging / file_of[tensor.name]), metadata={"format": "pt"})
                pending = {}
        if n > 1:
            index = {"metadata": {"total_size": total}, "weight_map": file_of}
            (staging / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        _fsync_folder(staging)
        _replace_folder(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def save_hf(model: Grok, path: str | Path, *, dtype=jnp.bfloat16, max_shard_bytes: int = 4 << 30) -> Path:
    """Write `model` (float or int8 weights, on one device or a mesh) as HF safetensors in `path`.

    Each parameter is gathered to the host one at a time; int8 matrices are dequantised in float32
    and then cast to `dtype` (bfloat16 as the hpcai-tech port, or float32: lossless for our weights).
    """
    flat = {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}

    @functools.lru_cache(maxsize=1)  # the E tensors of an expert stack come in a row: fetch the stack once
    def host(param: tuple):
        scales = flat.get((*param[:-1], "scales"))
        if scales is not None:
            return QuantizedWeight8bit(weight=np.asarray(flat[param]), scales=np.asarray(scales))
        return np.asarray(flat[param])

    def make(tensor: HFTensor) -> np.ndarray:
        return _hf_value(tensor, host(tensor.param), dtype)

    items = [(t, functools.partial(make, t)) for t in hf_layout(model.config)]
    return _write(items, Path(path), model.config, dtype, max_shard_bytes)


def release_to_hf(checkpoint: str | Path, config: GrokConfig, path: str | Path, *, dtype=jnp.bfloat16,
                  max_shard_bytes: int = 4 << 30) -> Path:
    """Convert a release-format checkpoint (the folder holding `ckpt-0/`) to HF safetensors, file by
    file: host memory is one shard plus one expert being dequantised, never the model."""
    by_param: dict[tuple, list[HFTensor]] = {}
    for tensor in hf_layout(config):
        by_param.setdefault(tensor.param, []).append(tensor)
    files = iter_release_tensors(checkpoint, config, mapped=True)  # checked, in file order
    current: dict[tuple, object] = {}

    def value_of(param: tuple):
        while param not in current:  # items ask for parameters in file order, so the next file is the one
            current.clear()
            tensor, value = next(files)
            current[tensor.param] = value
        return current[param]

    def make(tensor: HFTensor) -> np.ndarray:
        return _hf_value(tensor, value_of(tensor.param), dtype)

    items = [(t, functools.partial(make, t)) for release in release_layout(config) for t in by_param[release.param]]
    return _write(items, Path(path), config, dtype, max_shard_bytes)


# ---- reading ----------------------------------------------------------------------------------------

def _read_index(path: Path) -> dict[str, str]:
    """The index's weight_map (tensor name → shard file name), checked to be one."""
    index_file = path / INDEX_FILE
    try:
        index = read_json(index_file, "the safetensors index")
    except OSError as error:
        raise CheckpointError(str(error)) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in weight_map.items()):
        raise CheckpointError(f"{index_file}: not a safetensors index (expected an object with a "
                              "\"weight_map\" object of tensor name → file name)")
    for file in set(weight_map.values()):  # a name like ../../x would read outside the export
        if Path(file).name != file or not file.endswith(".safetensors"):
            raise CheckpointError(f"{index_file}: shard {file!r} is not a .safetensors file name in this folder")
    return weight_map


def _open_files(path: Path) -> tuple[dict[str, str], dict[str, object]]:
    """name → file, and file → open safe_open handle, from the index or the single file."""
    if (path / INDEX_FILE).exists():
        weight_map = _read_index(path)
    elif (path / SINGLE_FILE).exists():
        weight_map = None
    else:
        raise CheckpointError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} is here")
    handles = {}
    for file in sorted(set(weight_map.values()) if weight_map else {SINGLE_FILE}):
        try:
            check_regular(path / file, "a safetensors shard")  # safe_open would block on a FIFO
            handles[file] = safe_open(str(path / file), framework="numpy")
        except OSError as error:
            raise CheckpointError(str(error)) from None
        except Exception as error:  # bad header: the library raises several types
            raise CheckpointError(f"{path / file}: cannot open as safetensors ({error})") from None
    if weight_map is None:
        weight_map = {name: SINGLE_FILE for name in handles[SINGLE_FILE].keys()}  # noqa: SIM118
    return weight_map, handles


def open_export(path: str | Path, config: GrokConfig, *, check_finite: bool = True
                ) -> list[tuple[tuple, Callable]]:
    """Open an HF export for `config` and check it: every tensor present, of the right shape and a float
    dtype, a tied lm_head equal to the embedding. Returns, per parameter of ours, (path, reader):
    reader(dtype) gives a read_slice(index) that reads only that slice of our array from the files
    (picking experts, transposing), checked to be finite unless check_finite=False. `load.load_hf`
    assembles the model from them.
    """
    path = Path(path)
    weight_map, handles = _open_files(path)
    layout = hf_layout(config)
    expected = {t.name for t in layout}
    if missing := [t.name for t in layout if t.name not in weight_map]:
        raise CheckpointError(f"{path}: {len(missing)} of {len(layout)} tensors missing (first: {missing[0]}); "
                              f"is the config right (num_layers={config.num_layers})?")
    if extra := sorted(set(weight_map) - expected - {"lm_head.weight"}):
        raise CheckpointError(f"{path}: {len(extra)} tensors this config does not have (first: {extra[0]})")

    def opened(name: str):
        sliced = handles[weight_map[name]].get_slice(name)
        shape, kind = tuple(sliced.get_shape()), sliced.get_dtype()
        expected_shape = next(t.shape for t in layout if t.name == name) if name != "lm_head.weight" else \
            (config.vocab_size, config.emb_size)
        if shape != expected_shape or kind not in ("BF16", "F16", "F32"):
            raise CheckpointError(f"{path / weight_map[name]}: {name} is {kind} {list(shape)}, expected a float "
                                  f"tensor of shape {list(expected_shape)}")
        return sliced

    if "lm_head.weight" in weight_map:  # tied in Grok-1: check the first rows rather than read it all
        rows = slice(0, min(64, config.vocab_size))
        if not np.array_equal(opened("lm_head.weight")[rows], opened("model.embed_tokens.weight")[rows]):
            raise CheckpointError(f"{path}: lm_head.weight differs from model.embed_tokens.weight; Grok-1 ties them")

    def read(tensor: HFTensor, source, index: tuple) -> np.ndarray:
        part = source[index]
        if check_finite and not np.isfinite(part).all():
            raise CheckpointError(f"{path / weight_map[tensor.name]}: {tensor.name} holds NaN or infinite "
                                  "values (load_hf(..., check_finite=False) to load it anyway)")
        return part

    def reader(tensors: list[HFTensor]):
        sources = [opened(t.name) for t in tensors]  # checked now, before anything is placed

        def for_dtype(dtype):
            def read_slice(index: tuple) -> np.ndarray:
                rank = 3 if tensors[0].expert is not None else len(tensors[0].shape)
                index = tuple(index) + (slice(None),) * (rank - len(index))
                if tensors[0].expert is not None:  # ours [E, in, out] ← E tensors [out, in]
                    picked = range(*index[0].indices(len(sources)))
                    parts = [read(tensors[e], sources[e], (index[2], index[1])).T for e in picked]
                    return np.stack(parts).astype(dtype)
                if tensors[0].transposed:  # ours [in, out] ← [out, in]
                    return np.asarray(read(tensors[0], sources[0], (index[1], index[0])).T, dtype)
                return np.asarray(read(tensors[0], sources[0], index), dtype)
            return read_slice

        return for_dtype

    by_param: dict[tuple, list[HFTensor]] = {}
    for tensor in layout:
        by_param.setdefault(tensor.param, []).append(tensor)
    return [(param, reader(tensors)) for param, tensors in by_param.items()]
