"""Every parameter of Grok-1 in one table: where it lives in our model, what the release and the
Hugging Face format call it, how the release quantises it, and how it is split over a device mesh.

The checkpoint formats (`checkpoint.py`, `hf.py`), the sharding rules (`sharding.py`) and the int8
block counts of the layers all read this table, so a fact about a parameter is written once.

`ours` is the dotted path in `nnx.state(model)`: top-level for the embedding and the final norm,
inside `decoder_layers.N` for the rest. `release` and `hf` are name templates: {n} is the layer,
{e} the expert (HF stores each of a layer's 8 experts apart; we and the release keep one stack).
`split` names, per dimension of our array, the mesh axis it is divided over (None: every device
holds all of it); an int8 matrix's `scales` [..., blocks, out] follow their weight (see sharding.py).
"""

from __future__ import annotations

import dataclasses
import re

from grok_mini.config import RELEASE_BLOCKS

__all__ = ["DATA", "EXPERT", "MODEL", "Param", "PARAMS", "TOP_LEVEL", "PER_LAYER", "param_row", "RELEASE_BLOCKS"]

# Mesh axes: copies of the model (data), groups of experts (expert), tensor parallelism as in the release (model).
DATA, EXPERT, MODEL = "data", "expert", "model"



@dataclasses.dataclass(frozen=True)
class Param:
    ours: str  # e.g. "moe.experts.linear_1.w"
    release: str  # e.g. "transformer/decoder_layer_{n}/moe/linear_1/w"
    hf: str  # e.g. "model.layers.{n}.moe_block.experts.{e}.linear_1.weight"
    blocks: int | None  # int8 input blocks in the release; None: stored float32
    split: tuple[str | None, ...]  # mesh axis per dimension of our array
    why: str  # how it is split, in words

    @property
    def per_layer(self) -> bool:
        return "{n}" in self.release

    @property
    def per_expert(self) -> bool:
        return "{e}" in self.hf


_LAYER = "transformer/decoder_layer_{n}/"
_HF_LAYER = "model.layers.{n}."

PARAMS: tuple[Param, ...] = (
    Param("in_out_embed", "language_model/in_out_embed/embeddings", "model.embed_tokens.weight", None,
          (None, MODEL), "[V, D], reused as the output projection: width over model, whole vocabulary everywhere"),
    # Per layer, in the HF export's order.
    Param("multi_head_attention.query.w", _LAYER + "multi_head_attention/query/w", _HF_LAYER + "attn.q_proj.weight",
          1, (None, MODEL), "[D, H·K] column parallel: each device computes whole heads"),
    Param("multi_head_attention.key.w", _LAYER + "multi_head_attention/key/w", _HF_LAYER + "attn.k_proj.weight",
          1, (None, MODEL), "[D, KV·K] column parallel"),
    Param("multi_head_attention.value.w", _LAYER + "multi_head_attention/value/w", _HF_LAYER + "attn.v_proj.weight",
          1, (None, MODEL), "[D, KV·K] column parallel"),
    Param("multi_head_attention.linear.w", _LAYER + "multi_head_attention/linear/w", _HF_LAYER + "attn.o_proj.weight",
          RELEASE_BLOCKS, (MODEL, None), "[H·K, D] row parallel: the devices' partial sums are added"),
    Param("moe.router.w", _LAYER + "router/w", _HF_LAYER + "moe_block.gate.weight", None, (),
          "[D, E] float32, small: copied to every device"),
    Param("rms_norm.scale", _LAYER + "rms_norm/scale", _HF_LAYER + "pre_attn_norm.scale", None, (), "[D] copied"),
    Param("rms_norm_1.scale", _LAYER + "rms_norm_1/scale", _HF_LAYER + "post_attn_norm.scale", None, (), "[D] copied"),
    Param("rms_norm_2.scale", _LAYER + "rms_norm_2/scale", _HF_LAYER + "pre_moe_norm.scale", None, (), "[D] copied"),
    Param("rms_norm_3.scale", _LAYER + "rms_norm_3/scale", _HF_LAYER + "post_moe_norm.scale", None, (), "[D] copied"),
    Param("moe.experts.linear.w", _LAYER + "moe/linear/w", _HF_LAYER + "moe_block.experts.{e}.linear.weight",
          1, (EXPERT, None, MODEL), "[E, D, F] gate (GELU): experts over expert, FFN columns over model"),
    Param("moe.experts.linear_v.w", _LAYER + "moe/linear_v/w", _HF_LAYER + "moe_block.experts.{e}.linear_v.weight",
          1, (EXPERT, None, MODEL), "[E, D, F] value: like the gate"),
    Param("moe.experts.linear_1.w", _LAYER + "moe/linear_1/w", _HF_LAYER + "moe_block.experts.{e}.linear_1.weight",
          RELEASE_BLOCKS, (EXPERT, MODEL, None), "[E, F, D] down: experts over expert, FFN rows over model"),
    Param("rms_norm.scale", "language_model/rms_norm/scale", "model.norm.scale", None, (), "[D] final norm, copied"),
)
TOP_LEVEL = tuple(p for p in PARAMS if not p.per_layer)
PER_LAYER = tuple(p for p in PARAMS if p.per_layer)
_BY_PATH = {(p.per_layer, p.ours): p for p in PARAMS}


def param_row(path) -> Param | None:
    """The row of the parameter at `path` (a tuple from nnx.state or a dotted string), or None.

    An int8 matrix's "scales" find their weight's row; "decoder_layers.N." marks a per-layer path.
    """
    dotted = path if isinstance(path, str) else ".".join(str(part) for part in path)
    dotted = re.sub(r"\.scales$", ".w", dotted)
    inside = re.match(r"^decoder_layers\.\d+\.(.*)$", dotted)
    if inside:
        return _BY_PATH.get((True, inside[1]))
    return _BY_PATH.get((False, dotted)) or _BY_PATH.get((True, dotted))  # a layer's own path, e.g. in moe.py
