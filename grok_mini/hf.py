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
`load_hf(dir)` reads them back into a Grok, slice by slice (and onto a mesh, like load_checkpoint).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from grok_mini import sharding
from grok_mini.checkpoint import CheckpointError, iter_release_tensors, release_layout
from grok_mini.config import ConfigError, GrokConfig
from grok_mini.model import Grok
from grok_mini.quant import QuantizedWeight8bit, dequantize

__all__ = ["HFTensor", "hf_layout", "hf_config", "config_from_hf", "save_hf", "release_to_hf", "load_hf"]

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# Per layer: (HF name after "model.layers.N.", our parameter path inside decoder_layers[N]).
_LAYER_NAMES = [
    ("attn.q_proj.weight", "multi_head_attention.query.w"),
    ("attn.k_proj.weight", "multi_head_attention.key.w"),
    ("attn.v_proj.weight", "multi_head_attention.value.w"),
    ("attn.o_proj.weight", "multi_head_attention.linear.w"),
    ("moe_block.gate.weight", "moe.router.w"),
    ("pre_attn_norm.scale", "rms_norm.scale"),
    ("post_attn_norm.scale", "rms_norm_1.scale"),
    ("pre_moe_norm.scale", "rms_norm_2.scale"),
    ("post_moe_norm.scale", "rms_norm_3.scale"),
]
_EXPERT_MATRICES = ["linear", "linear_v", "linear_1"]  # gate (GELU), value, down: same names in HF


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
    """Every HF tensor of a Grok with `config`, layer by layer."""
    d, f, e = config.emb_size, config.ffn_size, config.num_experts
    q_out, kv_out = config.num_q_heads * config.key_size, config.num_kv_heads * config.key_size
    our_shapes = {  # [in, out] as we hold them (for one expert)
        "multi_head_attention.query.w": (d, q_out), "multi_head_attention.key.w": (d, kv_out),
        "multi_head_attention.value.w": (d, kv_out), "multi_head_attention.linear.w": (q_out, d),
        "moe.router.w": (d, e), "moe.experts.linear.w": (d, f), "moe.experts.linear_v.w": (d, f),
        "moe.experts.linear_1.w": (f, d),
    }

    def tensor(name, param, expert=None):
        dotted = ".".join(str(p) for p in param[2:]) if param[0] == "decoder_layers" else ""
        shape = our_shapes[dotted][::-1] if param[-1] == "w" else ((d,) if param[-1] == "scale" else None)
        return HFTensor(name, param, expert, shape)

    layout = [HFTensor("model.embed_tokens.weight", ("in_out_embed",), None, (config.vocab_size, d))]
    for n in range(config.num_layers):
        prefix = f"model.layers.{n}."
        layout += [tensor(prefix + name, ("decoder_layers", n, *ours.split("."))) for name, ours in _LAYER_NAMES]
        for matrix in _EXPERT_MATRICES:  # all experts of one stack together: the stack is fetched once
            param = ("decoder_layers", n, "moe", "experts", matrix, "w")
            layout += [tensor(f"{prefix}moe_block.experts.{k}.{matrix}.weight", param, k) for k in range(e)]
    layout.append(HFTensor("model.norm.scale", ("rms_norm", "scale"), None, (d,)))
    return layout


# ---- config.json ------------------------------------------------------------------------------------

def hf_config(config: GrokConfig, dtype=jnp.bfloat16) -> dict:
    """config.json in the hpcai-tech Grok1Config's field names (plus head_dim and widening_factor)."""
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


def config_from_hf(values: dict | str | Path) -> GrokConfig:
    """A GrokConfig from an hpcai-tech style config.json (a dict, the file, or its folder)."""
    source = "config.json"
    if not isinstance(values, dict):
        path = Path(values)
        path = path / "config.json" if path.is_dir() else path
        source = str(path)
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{path}: cannot read the HF config ({error})") from None
    try:
        hidden, heads, ffn = values["hidden_size"], values["num_attention_heads"], values["intermediate_size"]
        # The official ffn formula int(w·D)·2//3 (rounded up to 8) inverted, unless the file says w.
        widening = values.get("widening_factor", ffn * 3 / (2 * hidden))
        config = GrokConfig(
            vocab_size=values["vocab_size"], emb_size=hidden, key_size=values.get("head_dim", hidden // heads),
            num_q_heads=heads, num_kv_heads=values["num_key_value_heads"], num_layers=values["num_hidden_layers"],
            widening_factor=widening, num_experts=values["num_experts"],
            num_selected_experts=values["num_experts_per_tok"],
            attn_output_multiplier=values["attn_output_multiplier"],
            embedding_multiplier_scale=values["embedding_multiplier_scale"],
            output_multiplier_scale=values["output_multiplier_scale"],
            sequence_len=values["max_position_embeddings"], pad_token=values.get("pad_token_id", 0),
            eos_token=values.get("eos_token_id", 2))
    except KeyError as missing:
        raise CheckpointError(f"{source}: the HF config has no {missing} field") from None
    if config.ffn_size != ffn:
        raise ConfigError(f"{source}: intermediate_size={ffn} is not what the Grok-1 formula gives for "
                          f"hidden_size={hidden} and widening_factor={widening} ({config.ffn_size})")
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


def _write(items: list[tuple[HFTensor, Callable[[], np.ndarray]]], path: Path, config: GrokConfig, dtype,
           max_shard_bytes: int) -> Path:
    """Write the tensors in order, shard by shard (host memory: one shard), plus config and index."""
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

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf_config(config, dtype), indent=2) + "\n")
    pending, total = {}, 0
    for tensor, make in items:
        pending[tensor.name] = make()
        total += pending[tensor.name].nbytes
        if tensor.name in last_of_shard:
            save_file(pending, str(path / file_of[tensor.name]), metadata={"format": "pt"})
            pending = {}
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": file_of}
        (path / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
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
    files = iter_release_tensors(checkpoint, config, read=sharding.read_tensor_mapped)  # checked, in file order
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

def _open_files(path: Path) -> tuple[dict[str, str], dict[str, object]]:
    """name → file, and file → open safe_open handle, from the index or the single file."""
    if (path / INDEX_FILE).is_file():
        try:
            weight_map = json.loads((path / INDEX_FILE).read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"{path / INDEX_FILE}: not a safetensors index ({error})") from None
    elif (path / SINGLE_FILE).is_file():
        weight_map = None
    else:
        raise CheckpointError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} is here")
    handles = {}
    for file in sorted(set(weight_map.values()) if weight_map else {SINGLE_FILE}):
        try:
            handles[file] = safe_open(str(path / file), framework="numpy")
        except Exception as error:  # missing file, bad header: the library raises several types
            raise CheckpointError(f"{path / file}: cannot open as safetensors ({error})") from None
    if weight_map is None:
        weight_map = {name: SINGLE_FILE for name in handles[SINGLE_FILE].keys()}  # noqa: SIM118
    return weight_map, handles


def load_hf(path: str | Path, config: GrokConfig | None = None, *, dtype=jnp.bfloat16, mesh=None) -> Grok:
    """Read HF safetensors (hpcai-tech names) into a Grok with `dtype` activations and matrices.

    config defaults to the folder's config.json. Embedding, norms and router are kept in float32
    (as the release). Every tensor is read slice by slice, so with a `mesh` each device gets only
    its part and host memory stays near one slice.
    """
    path = Path(path)
    config = config_from_hf(path) if config is None else config
    if mesh is not None:
        sharding.check_mesh(config, mesh)
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

    abstract = sharding.abstract_model(config, dtype=dtype, param_dtype=dtype)
    graphdef, state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(state))
    by_param: dict[tuple, list[HFTensor]] = {}
    for tensor in layout:
        by_param.setdefault(tensor.param, []).append(tensor)

    previous = None
    for param, tensors in by_param.items():
        variable = flat[param]
        target = variable.get_value()
        sources = [opened(t.name) for t in tensors]

        def read_slice(index: tuple, tensors=tensors, sources=sources, target=target) -> np.ndarray:
            index = tuple(index) + (slice(None),) * (len(target.shape) - len(index))
            if tensors[0].expert is not None:  # ours [E, in, out] ← E tensors [out, in]
                picked = range(*index[0].indices(len(sources)))
                parts = [sources[e][index[2], index[1]].T for e in picked]
                return np.stack(parts).astype(target.dtype)
            if tensors[0].transposed:  # ours [in, out] ← [out, in]
                return np.asarray(sources[0][index[1], index[0]].T, target.dtype)
            return np.asarray(sources[0][index], target.dtype)

        variable.set_value(sharding.place(param, target.shape, read_slice, mesh))
        jax.block_until_ready(previous)  # asynchronous copies keep their host slices: at most two pending
        previous = variable.get_value()
    return sharding.tell_model_the_mesh(nnx.merge(graphdef, nnx.from_flat_state(flat)), mesh)
