"""The Grok-1 model: embedding ×multiplier, decoder layers with four RMSNorms, tied output ×multiplier."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from grok_mini.config import GrokConfig
from grok_mini.layers import KVCache, MultiHeadAttention, RMSNorm, record
from grok_mini.moe import MoELayer
from grok_mini.sharding import activation_sharding

__all__ = ["DecoderLayer", "Grok", "validate_tokens", "recording", "Recording"]


def validate_tokens(tokens, config: GrokConfig) -> np.ndarray:
    """Check concrete token ids on the host: [B, T] integers in [0, vocab_size), 1 <= T <= sequence_len.

    An out-of-range id would otherwise be clamped silently by the embedding lookup.
    """
    array = np.asarray(tokens)
    if array.ndim != 2 or array.shape[1] == 0 or array.shape[0] == 0:
        raise ValueError(f"tokens must be a non-empty [batch, length] array of ids, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"tokens must be integer ids, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= config.vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is outside the vocabulary [0, {config.vocab_size})")
    if array.shape[1] > config.sequence_len:
        raise ValueError(f"{array.shape[1]} tokens exceed sequence_len={config.sequence_len}")
    return array.astype(np.int32)


class DecoderLayer(nnx.Module):
    """Sandwich norms: h += norm_1(attn(norm(h))); h += norm_3(moe(norm_2(h)))."""

    def __init__(self, config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs: nnx.Rngs,
                 **moe_options):
        d = config.emb_size
        self.rms_norm = RMSNorm(d)  # before attention
        self.multi_head_attention = MultiHeadAttention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.rms_norm_1 = RMSNorm(d)  # after attention
        self.rms_norm_2 = RMSNorm(d)  # before the MoE
        self.moe = MoELayer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **moe_options)
        self.rms_norm_3 = RMSNorm(d)  # after the MoE
        self.config = config
        self.record_residual = False  # switched by grok_mini.recording: keeps the residual RMS

    def __call__(self, h, positions, key_mask, cache=None):
        attended, cache = self.multi_head_attention(self._norm("rms_norm", h), positions, key_mask, cache)
        h = h + self._norm("rms_norm_1", attended)
        h = h + self._norm("rms_norm_3", self.moe(self._norm("rms_norm_2", h)))
        if self.record_residual:
            record(self, "residual_rms", jnp.sqrt(jnp.mean(h.astype(jnp.float32) ** 2, axis=-1)))  # [B, T]
        return h, cache

    def _norm(self, name: str, x):
        """The sandwich norm `name`, or x as it is where the config's variant leaves that norm out."""
        return x if name in self.config.variant.drop_norms else getattr(self, name)(x)


class Grok(nnx.Module):
    """Grok-1 at any scale. `model(tokens)` → logits [B, T, vocab]; `model.extend(tokens, cache)` →
    (logits, cache) continues a KV cache (one KVCache per layer, see `init_cache`).

    dtype is the activation dtype (bfloat16 as released, or float32); param_dtype holds the seven
    matrices of each layer. Norms and router are always float32, as in the release, and so is the
    embedding unless embedding_dtype says otherwise: the model only ever uses it cast to `dtype` (the
    lookup's rows and the tied output), so embedding_dtype=dtype gives the same logits bit for bit,
    with half the memory in bfloat16 and no cast of the whole [V, D] matrix every decode step.
    mesh: the device mesh the weights will be split over (`grok_mini.make_mesh`; the loaders place
    them). Given one, the model keeps its residual stream whole along the width on every device and
    its MoE picks a dispatch that suits the mesh. The MoE options (`dispatch`, `capacity_factor`,
    `tile_rows`, `int8_kernel`) are those of `moe.MoELayer`.
    """

    def __init__(self, config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None, mesh: Mesh | None = None, dispatch: str | None = None,
                 capacity_factor: float = 1.25, tile_rows: int | None = None, int8_kernel: bool | None = None,
                 embedding_dtype=jnp.float32):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.dtype = dtype
        # One device is no mesh: nothing to split, nothing to constrain.
        self.mesh = mesh if mesh is not None and mesh.devices.size > 1 else None
        moe_options = dict(dispatch=dispatch, capacity_factor=capacity_factor, tile_rows=tile_rows,
                           int8_kernel=int8_kernel, mesh=self.mesh)
        # Tied: rows are token embeddings on the way in, and the output projection on the way out.
        self.in_out_embed = nnx.Param(
            (jax.random.normal(rngs.params(), (config.vocab_size, config.emb_size), jnp.float32)
             / config.emb_size**0.5).astype(embedding_dtype))
        self.decoder_layers = nnx.List(
            [DecoderLayer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **moe_options)
             for _ in range(config.num_layers)])
        self.rms_norm = RMSNorm(config.emb_size)  # final norm

    @classmethod
    def abstract(cls, config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32, **options) -> Grok:
        """What nnx.eval_shape(lambda: Grok(config, ...)) gives (shapes and dtypes, no memory), built from
        one traced layer copied num_layers times.

        Tracing the whole constructor takes time quadratic in the layer count (flax 0.12 inspects each
        traced RNG-counter update against the whole trace so far): 150 s for Grok-1's 64 layers on a
        2-core machine, against about 1 s this way. The layers are identical in structure, so copies of
        the first are what tracing them all would give (tests/test_sharding.py compares the two).
        """
        one_layer = dataclasses.replace(config, num_layers=1)
        model = nnx.eval_shape(lambda: cls(one_layer, dtype=dtype, param_dtype=param_dtype, **options))
        first = model.decoder_layers[0]
        shared = {id(model.mesh): model.mesh}  # copies of the layer share the one mesh object
        model.decoder_layers = nnx.List([first] + [copy.deepcopy(first, dict(shared))
                                                   for _ in range(config.num_layers - 1)])
        for _, node in nnx.iter_graph(model):  # the modules that keep the config get the real one
            if isinstance(node, nnx.Module) and getattr(node, "config", None) == one_layer:
                node.config = config
        return model

    def init_cache(self, batch: int, length: int | None = None) -> list[KVCache]:
        """An empty KV cache for `length` positions (default: the config's sequence_len)."""
        length = self.config.sequence_len if length is None else length
        return [KVCache.empty(batch, length, self.config, self.dtype) for _ in self.decoder_layers]

    def _whole_width(self, h: jax.Array) -> jax.Array:
        """On a mesh: the residual stream [B, T, D] whole along D on every device.

        Left to itself, jit splits it like the embedding's columns, and every RMSNorm, the router and
        each attention input then cost a collective of their own (~9 a layer instead of 2, which
        dominated decode on 4 GPUs).
        """
        if self.mesh is None:
            return h
        return jax.lax.with_sharding_constraint(h, activation_sharding("residual", h.shape, self.mesh))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens [B, T] → logits [B, T, vocab], every position attending to those before it."""
        return self._forward(tokens, None)[0]

    def extend(self, tokens: jax.Array, cache: list[KVCache]) -> tuple[jax.Array, list[KVCache]]:
        """Continue from where `cache` stopped: tokens [B, T] → (logits [B, T, vocab], the updated cache).

        The caller keeps step + T within the cache length (`generate` does): writes past its end
        cannot be detected inside jit.
        """
        return self._forward(tokens, cache)

    def _forward(self, tokens, cache):
        cfg = self.config
        if not isinstance(tokens, jax.core.Tracer):  # concrete input: check it (traced input is the caller's job)
            tokens = validate_tokens(tokens, cfg)
        tokens = jnp.asarray(tokens)
        key_mask = tokens != cfg.pad_token  # padding is masked as keys only
        start = jnp.zeros((tokens.shape[0],), jnp.int32) if cache is None else cache[0].step
        positions = start[:, None] + jnp.arange(tokens.shape[1])[None, :]  # [B, T]

        embedding = self.in_out_embed[...]
        h = embedding[tokens].astype(self.dtype) * jnp.asarray(cfg.embedding_multiplier_scale, self.dtype)
        h = self._whole_width(h)
        new_cache = []
        for i, layer in enumerate(self.decoder_layers):
            h, layer_cache = layer(h, positions, key_mask, None if cache is None else cache[i])
            h = self._whole_width(h)
            new_cache.append(layer_cache)
        h = self.rms_norm(h)
        logits = jnp.einsum("btd,vd->btv", h, embedding.astype(self.dtype))
        return logits * jnp.asarray(cfg.output_multiplier_scale, self.dtype), new_cache


@dataclasses.dataclass
class Recording:
    """What `recording` kept: the model's nnx.Intermediate state, taken out of the model on exit."""

    state: nnx.State | None = None


@contextlib.contextmanager
def recording(model: nnx.Module, *, attention: bool = False, router: bool = False, residual: bool = False
              ) -> Iterator[Recording]:
    """Keep intermediates of the calls inside the block: attention weights, router logits, residual RMS.

        with recording(model, router=True) as recorded:
            logits = forward(model, tokens)
        recorded.state["decoder_layers"][0]["moe"]["router_logits"]

    On exit, even after an error, the switches are restored and the recordings are taken out of
    the model (nnx.pop): left in, they would change its structure, and the next nnx.jit call on it
    would compile again.
    """
    switches = {"record_attention": attention, "record_router": router, "record_residual": residual}
    modules = [node for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)]
    before = [(module, name, getattr(module, name)) for module in modules for name in switches if hasattr(module, name)]
    for module, name, _ in before:
        setattr(module, name, switches[name] or getattr(module, name))
    recorded = Recording()
    try:
        yield recorded
    finally:
        for module, name, value in before:
            setattr(module, name, value)
        recorded.state = nnx.pop(model, nnx.Intermediate)
