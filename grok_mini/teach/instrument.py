"""Recording from a model for the notebooks: attention weights, router logits, activation statistics.

What a plot shows is computed here with the package's own modules and `grok_mini.recording`;
drawing lives in the per-notebook modules.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["activation_statistics", "forward_statistics", "record_attention", "record_router_logits"]


@functools.cache
def jitted_forward():
    from flax import nnx

    return nnx.jit(lambda model, tokens: model(tokens))


def _record_per_layer(model, tokens, path: tuple[str, ...], **switches) -> np.ndarray:
    """One forward pass inside `grok_mini.recording(model, **switches)`; the recording at `path`, stacked
    over the layers as float32. `recording` takes the recordings out of the model again."""
    import jax.numpy as jnp

    from grok_mini.model import recording

    with recording(model, **switches) as recorded:
        jitted_forward()(model, jnp.asarray(tokens))
    layers = recorded.state["decoder_layers"]

    def at(node):
        for key in path:
            node = node[key]
        return np.asarray(node[...], np.float32)

    return np.stack([at(layers[i]) for i in range(len(model.decoder_layers))])


def record_attention(model, tokens) -> np.ndarray:
    """Attention weights of every layer for `tokens` [B, T]: [L, B, KV, G, T, S] (query head = kv·G + g)."""
    return _record_per_layer(model, tokens, ("multi_head_attention", "attention_weights"), attention=True)


def record_router_logits(model, tokens) -> np.ndarray:
    """Router logits of every MoE layer for `tokens` [B, T]: [L, B, T, E] float32."""
    return _record_per_layer(model, tokens, ("moe", "router_logits"), router=True)


def forward_statistics(model, tokens) -> dict[str, np.ndarray]:
    """One forward pass of `model` on `tokens` [B, T] (no padding), with activation statistics per layer.

    Records the residual RMS, router logits and attention weights (`grok_mini.recording`) and
    summarises them with `activation_statistics`.
    """
    import jax.numpy as jnp

    from grok_mini.model import recording

    with recording(model, residual=True, router=True, attention=True) as recorded:
        logits = jitted_forward()(model, jnp.asarray(tokens))
    return activation_statistics(model, tokens, logits, recorded.state)


def activation_statistics(model, tokens, logits, recorded) -> dict[str, np.ndarray]:
    """Per-layer summaries of one recorded forward pass (`recorded`: the model's nnx.Intermediate state).

    residual_rms [L + 1, B, T] (index 0: the embedding × multiplier, then after each layer),
    router_entropy [L, B, T] (entropy of the router softmax / log E), top_gates [L, B, T, k],
    attention_entropy [L, H] (per query head: entropy of a query's weights / log of its visible keys,
    averaged over the queries that see at least 2 keys), logits [B, T, V] and
    next_token_logprob [B, T - 1] (log-probability the model gives each actual next token).
    """
    import jax

    tokens = np.asarray(tokens)
    config = model.config
    logits = np.asarray(logits, np.float32)
    layers = recorded["decoder_layers"]
    count = len(model.decoder_layers)

    def value(i, *path):  # layer i's recording at path, as float64
        node = layers[i]
        for key in path:
            node = node[key]
        return np.asarray(node[...], np.float64)

    embedded = np.asarray(model.in_out_embed[...], np.float64)[tokens] * config.embedding_multiplier_scale
    residual = [np.sqrt(np.mean(embedded**2, axis=-1))] + [value(i, "residual_rms") for i in range(count)]
    router_logits = np.stack([value(i, "moe", "router_logits") for i in range(count)])  # [L, B, T, E]
    probs = np.asarray(jax.nn.softmax(router_logits, axis=-1), np.float64)
    router_entropy = -(probs * np.log(np.maximum(probs, 1e-30))).sum(-1) / np.log(config.num_experts)
    top_gates = -np.sort(-probs, axis=-1)[..., : config.num_selected_experts]

    weights = np.stack([value(i, "multi_head_attention", "attention_weights") for i in range(count)])
    l, b, kv, g, t, s = weights.shape
    weights = weights.reshape(l, b, kv * g, t, s)  # query head h = kv·G + g
    visible = np.arange(s)[None, :] <= np.arange(t)[:, None]  # causal, no padding: query i sees keys 0..i
    entropy = -(weights * np.log(np.maximum(weights, 1e-30))).sum(-1)  # [L, B, H, T]
    keys = visible.sum(-1)  # [T]
    normalised = entropy[..., keys >= 2] / np.log(keys[keys >= 2])
    log_probs = np.asarray(jax.nn.log_softmax(logits[:, :-1], axis=-1))
    next_logprob = np.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
    return {"residual_rms": np.stack(residual), "router_entropy": router_entropy, "top_gates": top_gates,
            "attention_entropy": normalised.mean(axis=(1, 3)), "logits": logits, "next_token_logprob": next_logprob}
