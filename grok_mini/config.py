"""GrokConfig: the numbers that define a Grok-1-shaped model, at any scale.

Field names are those of the official `LanguageModelConfig` / `TransformerConfig`, so a reader can
hold this file next to xai-org/grok-1's `run.py`. Everything else (ffn size, parameter counts,
memory) is derived from these fields.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar

from grok_mini.files import read_json

__all__ = ["GrokConfig", "Variant", "NORMS", "ConfigError", "PRESETS", "preset", "RELEASE_BLOCKS", "int4_group"]

# The release quantises its row-parallel matrices (attention `linear`, expert `linear_1`, whose input
# dimension it splits 8 ways) in 8 blocks of input rows, each with its own scales.
RELEASE_BLOCKS = 8


def int4_group(size_in: int, group_size: int) -> int:
    """Rows per int4 group (quant.Int4): the largest even divisor of size_in that is at most group_size
    (Grok-1's 6144 and 32768 take 64 or 128 exactly; the toy's FFN width 176 takes 44 for 64, 88 for 128)."""
    group = next((g for g in range(min(group_size, size_in), 1, -1) if size_in % g == 0 and g % 2 == 0), None)
    if group is None:
        raise ValueError(f"int4 needs an even number of input rows in a group; {size_in} rows have no even divisor "
                         f"≤ {group_size}")
    return group


class ConfigError(ValueError):
    """A GrokConfig whose numbers cannot describe a model."""


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int in Python, not a size


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value, limit: int = 60) -> str:
    """repr(value), shortened: a config value in an error message may be a 4,000-digit number."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # ints past Python's digit limit, nesting past the stack
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= limit else f"{text[:limit - 20]}… ({len(text):,} characters)"


NORMS = ("rms_norm", "rms_norm_1", "rms_norm_2", "rms_norm_3")  # before/after attention, before/after the MoE


@dataclasses.dataclass(frozen=True)
class Variant:
    """Grok-1's design choices as switches, for the exploration lab. Every default is the official model.

    router            "softmax_topk": softmax over all experts, then the top-k (Grok-1); "topk_softmax":
                      the top-k logits, then a softmax over those k (gates sum to 1)
    renormalize       divide the top-k gates by their sum (Mixtral's choice); Grok-1 keeps them raw
    capacity_factor   None: every token reaches its experts (dropless, Grok-1); a number: each expert
                      takes at most factor · N·k/E token copies and drops the rest (GShard/Switch)
    activation        "gelu": gated GELU in its tanh form (Grok-1); "silu": gated SiLU (SwiGLU)
    drop_norms        names of the four sandwich norms to leave out (see NORMS), e.g. ("rms_norm_3",)
                      for no post-MoE norm; their scales stay in the model, unused
    logit_cap         None: Grok-1's 30·tanh(x/30) on attention logits; math.inf: no cap; c: c·tanh(x/c)
    rope              "half_split": dimension i rotates with i + D/2 (Grok-1); "interleaved": with i + 1
    rope_base         None: Grok-1's 10,000; or another base

    Experts and experts per token (a dense model is 1 and 1), and the query/key-value head grouping
    (MHA: num_kv_heads = num_q_heads; MQA: 1), are GrokConfig's own fields.
    """

    router: str = "softmax_topk"
    renormalize: bool = False
    capacity_factor: float | None = None
    activation: str = "gelu"
    drop_norms: tuple[str, ...] = ()
    logit_cap: float | None = None
    rope: str = "half_split"
    rope_base: float | None = None

    def __post_init__(self):
        def need(ok: bool, message: str):
            if not ok:
                raise ConfigError(f"Variant: {message}")

        choices = {"router": ("softmax_topk", "topk_softmax"), "activation": ("gelu", "silu"),
                   "rope": ("half_split", "interleaved")}
        for name, allowed in choices.items():
            need(getattr(self, name) in allowed, f"{name} must be one of {', '.join(allowed)}, "
                 f"got {shown(getattr(self, name))}")
        need(isinstance(self.renormalize, bool), f"renormalize must be True or False, got {shown(self.renormalize)}")
        need(isinstance(self.drop_norms, tuple) and all(n in NORMS for n in self.drop_norms)
             and len(set(self.drop_norms)) == len(self.drop_norms),
             f"drop_norms must be a tuple of distinct names from {', '.join(NORMS)}, got {shown(self.drop_norms)}")
        for name in ("capacity_factor", "logit_cap", "rope_base"):
            value = getattr(self, name)
            need(value is None or (is_number(value) and value > 0 and not math.isnan(value)),
                 f"{name} must be None (Grok-1's) or a positive number, got {shown(value)}")
        need(self.capacity_factor is None or math.isfinite(self.capacity_factor),
             f"capacity_factor must be finite, got {self.capacity_factor}")
        need(self.rope_base is None or math.isfinite(self.rope_base) and self.rope_base > 1,
             f"rope_base must be a finite number > 1, got {shown(self.rope_base)}")
        need(not (self.renormalize and self.router == "topk_softmax"),
             "renormalize=True with router='topk_softmax' does nothing: that softmax over the k already sums "
             "to 1; pick one of the two")

    def changes(self) -> dict:
        """The switches that differ from Grok-1's, {name: value}."""
        official = Variant()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(official, f.name)}

    @classmethod
    def from_dict(cls, values, *, source: str = "variant") -> Variant:
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: variant must be an object of switches, got {shown(values)}")
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(values) - names):
            raise ConfigError(f"{source}: unknown variant switches {unknown}; known: {', '.join(sorted(names))}")
        values = dict(values)
        if isinstance(values.get("drop_norms"), list):  # JSON has lists, not tuples
            values["drop_norms"] = tuple(values["drop_norms"])
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None


@dataclasses.dataclass(frozen=True)
class GrokConfig:
    vocab_size: int = 128 * 1024
    emb_size: int = 48 * 128
    key_size: int = 128
    num_q_heads: int = 48
    num_kv_heads: int = 8
    num_layers: int = 64
    widening_factor: float = 8.0
    num_experts: int = 8
    num_selected_experts: int = 2
    attn_output_multiplier: float = 0.08838834764831845  # 1/sqrt(key_size): scales the attention *logits*
    embedding_multiplier_scale: float = 78.38367176906169  # sqrt(6144)
    output_multiplier_scale: float = 0.5773502691896257  # 1/sqrt(3)
    sequence_len: int = 8192
    pad_token: int = 0
    eos_token: int = 2
    # Not in the official config: our switches for the lab; the default is Grok-1 (see Variant).
    variant: Variant = Variant()

    # Hard-coded in the official model, not configurable there; kept here so they have one home.
    rope_base: ClassVar[int] = 10_000
    max_attn_val: ClassVar[float] = 30.0
    rms_norm_eps: ClassVar[float] = 1e-5

    def __post_init__(self):
        def need(ok: bool, message: str):
            if not ok:
                raise ConfigError(f"GrokConfig: {message}")

        # Types and ranges first, one field at a time, so the checks below only see numbers.
        for name, largest in _INT_LIMITS.items():
            value = getattr(self, name)
            need(is_int(value) and 0 < value <= largest,
                 f"{name} must be a positive integer ≤ {largest:,}, got {shown(value)}")
        for name, largest in _FLOAT_LIMITS.items():
            value = getattr(self, name)
            need(is_number(value) and math.isfinite(value) and 0 < value <= largest,
                 f"{name} must be a number > 0 and ≤ {largest:g}, got {shown(value)}")
        for name in ("pad_token", "eos_token"):
            need(is_int(getattr(self, name)), f"{name} must be an integer token id, got {shown(getattr(self, name))}")
        need(0 <= self.pad_token < self.vocab_size and 0 <= self.eos_token < self.vocab_size,
             f"pad_token={self.pad_token} and eos_token={self.eos_token} must be ids below "
             f"vocab_size={self.vocab_size}")
        need(self.num_q_heads % self.num_kv_heads == 0,
             f"num_q_heads={self.num_q_heads} is not divisible by num_kv_heads={self.num_kv_heads} "
             "(each key/value head serves a whole group of query heads)")
        need(self.key_size % 2 == 0,
             f"key_size={self.key_size} must be even (RoPE rotates pairs of dimensions)")
        need(self.num_selected_experts <= self.num_experts,
             f"num_selected_experts={self.num_selected_experts} exceeds num_experts={self.num_experts}")
        need(isinstance(self.variant, Variant), f"variant must be a Variant, got {shown(self.variant)}")
        need(self.ffn_size > 0, f"widening_factor={self.widening_factor} gives an empty expert FFN")
        need(self.ffn_size <= _MAX_FFN_SIZE, f"widening_factor={self.widening_factor} with emb_size={self.emb_size} "
             f"gives an expert FFN of {self.ffn_size:,}, more than {_MAX_FFN_SIZE:,}")

    # ---- derived sizes ----------------------------------------------------------------------

    @property
    def ffn_size(self) -> int:
        """Expert hidden width: the official formula, int(w * emb) * 2 // 3 rounded up to a multiple of 8."""
        size = int(self.widening_factor * self.emb_size) * 2 // 3
        return size + (8 - size) % 8

    @property
    def q_per_kv(self) -> int:
        return self.num_q_heads // self.num_kv_heads

    # ---- counting ---------------------------------------------------------------------------

    def param_counts(self) -> dict[str, int]:
        """Parameters by component: embedding (tied, counted once), attention, experts, router, norms."""
        d, f, e = self.emb_size, self.ffn_size, self.num_experts
        attention = d * self.num_q_heads * self.key_size * 2 + d * self.num_kv_heads * self.key_size * 2
        return {
            "embedding": self.vocab_size * d,
            "attention": self.num_layers * attention,
            "experts": self.num_layers * e * 3 * d * f,
            "router": self.num_layers * d * e,
            "norms": self.num_layers * 4 * d + d,
        }

    @property
    def num_params(self) -> int:
        return sum(self.param_counts().values())

    @property
    def num_active_params(self) -> int:
        """Parameters a token touches: everything but the experts it was not routed to."""
        counts = self.param_counts()
        return self.num_params - counts["experts"] * (self.num_experts - self.num_selected_experts) // self.num_experts

    def flops_per_token(self, context: int | None = None) -> int:
        """Forward-pass FLOPs one token costs (2 per multiply-add): every matrix it touches, the
        selected experts only, the tied output projection, and attention over `context` earlier
        positions (default: half the sequence length, the average under a causal mask)."""
        d, f, k = self.emb_size, self.ffn_size, self.num_selected_experts
        context = self.sequence_len // 2 if context is None else context
        heads = self.num_q_heads * self.key_size
        projections = d * heads * 2 + d * self.num_kv_heads * self.key_size * 2  # q, o; k, v
        per_layer = projections + k * 3 * d * f + d * self.num_experts + 2 * heads * context  # + scores, values
        return 2 * (self.num_layers * per_layer + self.vocab_size * d)

    def weight_bytes(self, fmt: str, *, group_size: int = 64, attention: bool = False) -> int:
        """Bytes of weights: "bf16" (everything bfloat16), "fp32", "int8" (the release format:
        int8 matrices with bfloat16 scales; embeddings, norms and router stay float32) or "int4"
        (quant.Int4: the expert matrices, and the attention ones if `attention`, in int4 with a
        bfloat16 scale per group of group_size input rows; the rest as int8)."""
        counts = self.param_counts()
        if fmt in ("bf16", "fp32"):
            return self.num_params * (2 if fmt == "bf16" else 4)
        if fmt not in ("int8", "int4"):
            raise ConfigError(f"weight_bytes: format must be 'bf16', 'fp32', 'int8' or 'int4', got {fmt!r}")
        d, f, e, L = self.emb_size, self.ffn_size, self.num_experts, self.num_layers
        q_out, kv_out = self.num_q_heads * self.key_size, self.num_kv_heads * self.key_size

        def matrix(size_in, size_out, blocks, packed):
            if packed:  # int4: two values a byte, a bfloat16 scale per group and output column
                return size_in * size_out // 2 + 2 * (size_in // int4_group(size_in, group_size)) * size_out
            return size_in * size_out + 2 * blocks * size_out  # int8, a bfloat16 scale per block and column

        b = RELEASE_BLOCKS  # int8 blocks: 1 for the column-parallel matrices, 8 for the row-parallel ones
        experts4, attention4 = fmt == "int4", fmt == "int4" and attention
        per_expert = 2 * matrix(d, f, 1, experts4) + matrix(f, d, b, experts4)
        per_attention = (matrix(d, q_out, 1, attention4) + 2 * matrix(d, kv_out, 1, attention4)
                         + matrix(q_out, d, b, attention4))
        float32 = counts["embedding"] + counts["router"] + counts["norms"]
        return L * (e * per_expert + per_attention) + 4 * float32

    def kv_cache_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """Keys and values of every layer for one token (bfloat16 by default)."""
        return 2 * self.num_layers * self.num_kv_heads * self.key_size * bytes_per_value

    # ---- I/O --------------------------------------------------------------------------------

    @property
    def is_official(self) -> bool:
        """True unless a Variant switch differs from Grok-1's architecture."""
        return not self.variant.changes()

    def to_dict(self) -> dict:
        """The official fields, plus "variant" (only the switches that differ) for a lab variant."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "variant"}
        if changes := self.variant.changes():
            values["variant"] = {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}
        return values

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "config") -> GrokConfig:
        """Build from official field names, all of them; derived keys (ffn_size, rope_base, ...) must agree.

        Every problem is a ConfigError that starts with `source` (the file, when read from one).
        """
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a JSON object of config fields, got {type(values).__name__}")
        names = {field.name for field in dataclasses.fields(cls)} - {"variant"}  # variant: optional, ours
        derived = {"ffn_size", "rope_base", "max_attn_val", "rms_norm_eps"}
        unknown = set(values) - names - derived - {"variant"}
        if unknown:
            raise ConfigError(f"{source}: unknown config keys {sorted(unknown)}")
        if missing := sorted(names - set(values)):  # a default here would be Grok-1's: silently another model
            raise ConfigError(f"{source}: missing config keys {missing}")
        variant = Variant.from_dict(values.get("variant", {}), source=source)
        try:
            config = cls(**{k: v for k, v in values.items() if k in names}, variant=variant)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
        for key in sorted(derived & set(values)):
            ours, theirs = getattr(config, key), values[key]
            if not is_number(theirs):
                raise ConfigError(f"{source}: {key} must be a number, got {shown(theirs)}")
            if not math.isclose(theirs, ours, rel_tol=1e-12):
                raise ConfigError(f"{source}: {key}={shown(theirs)} disagrees with the value derived "
                                  f"from the other fields ({ours!r})")
        return config

    @classmethod
    def from_json(cls, path: str | Path) -> GrokConfig:
        try:
            values = read_json(path, "the model config", CONFIG_MAX_BYTES)
        except OSError as error:  # missing, not a regular file, too large, not UTF-8 JSON
            raise ConfigError(str(error)) from None
        return cls.from_dict(values, source=str(path))


# Upper bounds: far above Grok-1 (shown after each), low enough that a typo cannot ask for exabytes.
_INT_LIMITS = {
    "vocab_size": 1 << 24,  # 131,072
    "emb_size": 1 << 20,  # 6,144
    "key_size": 1 << 14,  # 128
    "num_q_heads": 1 << 12,  # 48
    "num_kv_heads": 1 << 12,  # 8
    "num_layers": 1024,  # 64
    "num_experts": 1024,  # 8
    "num_selected_experts": 1024,  # 2
    "sequence_len": 1 << 24,  # 8,192
}
_FLOAT_LIMITS = {
    "widening_factor": 1024.0,  # 8
    "attn_output_multiplier": 1e6,  # 0.088
    "embedding_multiplier_scale": 1e6,  # 78.4
    "output_multiplier_scale": 1e6,  # 0.577
}
_MAX_FFN_SIZE = 1 << 22  # 32,768
CONFIG_MAX_BYTES = 1 << 20


def _scaled(**fields) -> GrokConfig:
    """A Grok-1-shaped preset whose multipliers follow its own sizes, as Grok-1's follow 6144 and 128."""
    fields.setdefault("attn_output_multiplier", 1 / math.sqrt(fields["key_size"]))
    fields.setdefault("embedding_multiplier_scale", math.sqrt(fields["emb_size"]))
    return GrokConfig(**fields)


PRESETS: dict[str, GrokConfig] = {
    # The release: 64 layers, 8 experts of width 32768, 315.7B parameters.
    "grok-1": GrokConfig(),
    # Trains on a laptop CPU in minutes: same shape of everything, tiny sizes.
    "toy": _scaled(vocab_size=2048, emb_size=128, key_size=32, num_q_heads=4, num_kv_heads=2,
                   num_layers=4, widening_factor=2.0, sequence_len=256),
    # In between: a model one GPU trains quickly (144M parameters, 43M active).
    "small": _scaled(vocab_size=8192, emb_size=512, key_size=64, num_q_heads=8, num_kv_heads=2,
                     num_layers=8, widening_factor=4.0, sequence_len=1024),
    # One full-width Grok-1 layer: the real shapes of everything, for benchmarks and sharding tests.
    "grok-1-1layer": GrokConfig(num_layers=1),
}


def preset(name: str) -> GrokConfig:
    """The preset called `name`, or a ConfigError listing the names that exist."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
