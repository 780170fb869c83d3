"""Mixture of experts: a float32 router picks 2 of 8 gated-GELU experts for every token.

The router takes a softmax over *all* experts and keeps the top-k probabilities as they are
(no renormalisation), exactly as the official model does. `dense_moe` is the plain reference: every
expert runs on every token and the gates select; it is slow (E/k times the needed FLOPs) and obviously right.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from grok_mini.config import GrokConfig
from grok_mini.layers import Linear, record

__all__ = ["gelu_tanh", "Router", "Experts", "MoELayer", "route", "dense_moe", "gate_matrix"]


def gelu_tanh(x: jax.Array) -> jax.Array:
    """The expert activation: GELU in its tanh form (jax.nn.gelu's default), not SiLU, not exact erf."""
    return jax.nn.gelu(x, approximate=True)


def route(router_logits: jax.Array, num_selected: int) -> tuple[jax.Array, jax.Array]:
    """Softmax over all experts, then the top-k: (gates [..., k] float32, expert ids [..., k])."""
    probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
    return jax.lax.top_k(probs, num_selected)


def gate_matrix(gates: jax.Array, experts: jax.Array, num_experts: int) -> jax.Array:
    """[..., k] gates and ids → [..., E] weights, zero for the experts a token was not sent to."""
    return jnp.einsum("...k,...ke->...e", gates, jax.nn.one_hot(experts, num_experts, dtype=gates.dtype))


class Router(nnx.Module):
    """logits = float32(x) · w, w [D, E] kept in float32 (a bf16 router can flip near-tied choices)."""

    def __init__(self, config: GrokConfig, *, rngs: nnx.Rngs):
        d = config.emb_size
        self.w = nnx.Param(jax.random.normal(rngs.params(), (d, config.num_experts), jnp.float32) / d**0.5)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("...d,de->...e", x.astype(jnp.float32), self.w[...])


class Experts(nnx.Module):
    """E gated-GELU FFNs: out_e(x) = (gelu_tanh(x·linear_e) ⊙ x·linear_v_e) · linear_1_e."""

    def __init__(self, config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs: nnx.Rngs):
        d, f, e = config.emb_size, config.ffn_size, config.num_experts
        linear = dict(experts=e, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear = Linear(d, f, **linear)  # gate, through GELU
        self.linear_v = Linear(d, f, **linear)  # value, not activated
        self.linear_1 = Linear(f, d, blocks=8, **linear)  # down projection
        self.dtype = dtype


def dense_moe(experts: Experts, x: jax.Array, gates: jax.Array) -> jax.Array:
    """Reference dispatch: all E experts on all N tokens, combined by gates [N, E] (zero = not chosen).

    x [N, D] → [N, D]. Adding the zero-gated experts' outputs changes nothing, so this equals
    Σ over the chosen k of gate · expert(x).
    """
    dtype = experts.dtype
    x = x.astype(dtype)
    gate = jnp.einsum("nd,edf->enf", x, experts.linear.kernel())
    value = jnp.einsum("nd,edf->enf", x, experts.linear_v.kernel())
    hidden = gelu_tanh(gate) * value
    out = jnp.einsum("enf,efd->end", hidden, experts.linear_1.kernel())  # [E, N, D]
    return jnp.einsum("ne,end->nd", gates.astype(dtype), out)


class MoELayer(nnx.Module):
    """Route each token to its top-k experts and sum their outputs weighted by the router's probabilities."""

    def __init__(self, config: GrokConfig, *, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.router = Router(config, rngs=rngs)
        self.experts = Experts(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.record_router = False  # model.set_attributes(record_router=True) keeps the logits

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, T, D] → [B, T, D]; records the router logits (for balance losses and plots) on request."""
        router_logits = self.router(x)  # [B, T, E] float32
        if self.record_router:
            record(self, "router_logits", router_logits)
        gates, chosen = route(router_logits, self.config.num_selected_experts)
        weights = gate_matrix(gates, chosen, self.config.num_experts)  # [B, T, E]
        flat = x.reshape(-1, x.shape[-1])
        out = dense_moe(self.experts, flat, weights.reshape(-1, weights.shape[-1]))
        return out.reshape(x.shape).astype(x.dtype)
