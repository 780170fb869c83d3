"""Plausible wrong answers to every exercise, as students write them, and what the checker must say.

MISTAKES[exercise] lists (words, answer): the checker must reject `answer` with a message that
matches the regular expression `words` (the mistake named). USES_PACKAGE[exercise] is an answer
that calls the function of the package (or of a library) that the exercise asks for: refused.
HARD_CODED answers are made by `hard_coded(solution)`: the right output for the first input the
checker gives, returned for every input.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grok_mini import moe, train
from grok_mini.checkpoint import release_layout
from grok_mini.config import GrokConfig
from grok_mini.generate import filter_logits
from grok_mini.layers import RMSNorm, rotary_embedding
from grok_mini.quant import dequantize
from grok_mini.teach.exercises.rope import interleaved_rope
from teacher.solutions import (
    attention,
    embeddings,
    generation,
    rope,
    routing,
    scale,
    tokenization,
    training,
)

# ---- 00 scale ---------------------------------------------------------------------------------------


def _embedding_twice(config):
    return scale.count_params(config) + config.vocab_size * config.emb_size


def _ffn_without_rounding(config):
    wrong = int(config.widening_factor * config.emb_size)
    return scale.count_params(config) + config.num_layers * config.num_experts * 3 * config.emb_size * (
        wrong - config.ffn_size)


def _query_heads_for_kv(config):
    d = config.emb_size
    return scale.count_params(config) + config.num_layers * 2 * d * config.key_size * (
        config.num_q_heads - config.num_kv_heads)


def _active_experts_only(config):
    per_expert = 3 * config.emb_size * config.ffn_size
    unused = config.num_experts - config.num_selected_experts
    return scale.count_params(config) - config.num_layers * unused * per_expert


def _cache_of_query_heads(config, tokens, batch):
    return 2 * config.num_layers * config.num_q_heads * config.key_size * 2 * tokens * batch


def _cache_in_float32(config, tokens, batch):
    return 2 * scale.kv_cache_bytes(config, tokens, batch)


def _cache_of_keys_only(config, tokens, batch):
    return scale.kv_cache_bytes(config, tokens, batch) // 2


def _cache_of_one_sequence(config, tokens, batch):
    return scale.kv_cache_bytes(config, tokens, 1)


# ---- 02 embeddings and RMSNorm -------------------------------------------------------------------------


def _rms_plus_one(x, scale_, eps=1e-5):
    return embeddings.rms_norm(x, scale_ + 1.0, eps)


def _rms_without_eps(x, scale_, eps=1e-5):
    return embeddings.rms_norm(x, scale_, 0.0)


def _layer_norm(x, scale_, eps=1e-5):
    x32 = x.astype(jnp.float32)
    centred = x32 - x32.mean(-1, keepdims=True)
    return (centred / jnp.sqrt(jnp.mean(centred**2, -1, keepdims=True) + eps) * scale_).astype(x.dtype)


def _rms_float32_out(x, scale_, eps=1e-5):
    return embeddings.rms_norm(x, scale_, eps).astype(jnp.float32)


def _rms_in_input_dtype(x, scale_, eps=1e-5):
    """Everything in x's dtype: bfloat16 squares and sums, where Grok-1 works in float32."""
    mean_square = jnp.mean(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(mean_square + jnp.asarray(eps, x.dtype)) * scale_.astype(x.dtype)


def _logits_without_multiplier(h, embedding, config):
    return jnp.einsum("btd,vd->btv", h, embedding)


def _logits_with_the_input_multiplier(h, embedding, config):
    return jnp.einsum("btd,vd->btv", h, embedding) * config.embedding_multiplier_scale


def _logits_divided(h, embedding, config):
    return jnp.einsum("btd,vd->btv", h, embedding) / config.output_multiplier_scale


# ---- 03 RoPE ----------------------------------------------------------------------------------------------


def _frequencies_i_over_d(key_size, base=10_000):
    return 1.0 / base ** (np.arange(key_size // 2) / key_size)


def _frequencies_not_inverted(key_size, base=10_000):
    return base ** (np.arange(0, key_size, 2) / key_size)


def _frequencies_from_one(key_size, base=10_000):
    return 1.0 / base ** (np.arange(2, key_size + 2, 2) / key_size)


def _rope_interleaved(x, positions):
    return interleaved_rope(x, positions)


def _rope_from_zero(x, positions):
    return rope.apply_rope(x, jnp.broadcast_to(jnp.arange(x.shape[1]), positions.shape))


def _rope_backwards(x, positions):
    return rope.apply_rope(x, -positions)


# ---- 04 attention ------------------------------------------------------------------------------------------


def _kv_head_modular(query_head, num_q_heads, num_kv_heads):
    return query_head % num_kv_heads


def _kv_head_divided_by_kv(query_head, num_q_heads, num_kv_heads):
    return query_head // num_kv_heads


def _kv_head_rounded(query_head, num_q_heads, num_kv_heads):
    return round(query_head / (num_q_heads / num_kv_heads))


def _attention_uncapped(q, k, v, mask):
    return attention.attention(q, k, v, mask, cap=1e9)


def _attention_modular(q, k, v, mask):
    group = q.shape[2] // k.shape[2]
    k, v = jnp.tile(k, (1, 1, group, 1)), jnp.tile(v, (1, 1, group, 1))  # head h reads h % KV
    return attention.attention(q, k, v, mask)


def _attention_unmasked(q, k, v, mask):
    return attention.attention(q, k, v, jnp.ones_like(mask))


def _attention_capped_before_scaling(q, k, v, mask):
    group = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    logits = 30.0 * jnp.tanh(jnp.einsum("bthd,bshd->bhts", q, k) / 30.0) / jnp.sqrt(q.shape[-1])
    weights = jax.nn.softmax(jnp.where(mask[:, None], logits, -1e30), axis=-1)
    return jnp.einsum("bhts,bshd->bthd", weights, v)


# ---- 01 tokenization ----------------------------------------------------------------------------------------


def _merge_first_occurrence(pieces, pair):
    for i in range(len(pieces) - 1):
        if (pieces[i], pieces[i + 1]) == tuple(pair):
            return pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    return pieces


def _merge_joined_string(pieces, pair):
    return " ".join(pieces).replace(" ".join(pair), "".join(pair)).split(" ")


def _merge_right_to_left(pieces, pair):
    return tokenization.merge_pair(pieces[::-1], pair[::-1])[::-1] if pair[0] == pair[1] else \
        tokenization.merge_pair(pieces, pair)


def _decode_keeping_the_dummy_space(pieces):
    return " " + tokenization.decode_pieces(pieces)


def _decode_with_lstrip(pieces):
    return tokenization.decode_pieces(pieces).lstrip()


def _decode_bytes_as_latin1(pieces):
    text = "".join(chr(int(p[3:5], 16)) if p.startswith("<0x") else p for p in pieces).replace("▁", " ")
    return text[1:] if text.startswith(" ") else text


def _decode_leaving_the_markers(pieces):
    return "".join(pieces)


# ---- 05 routing ----------------------------------------------------------------------------------------------


def _renormalised_top2(logits):
    gates, ids = routing.top2_route(logits)
    return gates / gates.sum(-1, keepdims=True), ids


def _softmax_of_top2_logits(logits):
    top, ids = jax.lax.top_k(jnp.asarray(logits), 2)
    return jax.nn.softmax(top, axis=-1), ids


def _bottom2(logits):
    ids = np.argsort(logits, axis=-1)[:, :2]
    return np.take_along_axis(jax.nn.softmax(logits, axis=-1), ids, -1), ids


def _top2_second_first(logits):
    gates, ids = routing.top2_route(logits)
    return gates[:, ::-1], ids[:, ::-1]


def _balance_not_divided_by_k(logits, num_selected):
    return num_selected * routing.balance_loss(logits, num_selected)


def _balance_without_e(logits, num_selected):
    return routing.balance_loss(logits, num_selected) / logits.shape[-1]


def _balance_of_loads_squared(logits, num_selected):
    n, e = logits.shape
    _, chosen = jax.lax.top_k(jnp.asarray(logits), num_selected)
    f = jnp.bincount(chosen.reshape(-1), length=e) / (n * num_selected)
    return e * jnp.sum(f * f)


# ---- 06 the full model -----------------------------------------------------------------------------------------


def _layer_without_post_norms(layer, h, positions, key_mask):
    attended, _ = layer.multi_head_attention(layer.rms_norm(h), positions, key_mask)
    h = h + attended
    return h + layer.moe(layer.rms_norm_2(h))


def _layer_normalising_the_sum(layer, h, positions, key_mask):
    attended, _ = layer.multi_head_attention(layer.rms_norm(h), positions, key_mask)
    h = layer.rms_norm_1(h + attended)
    return layer.rms_norm_3(h + layer.moe(layer.rms_norm_2(h)))


def _layer_without_pre_norms(layer, h, positions, key_mask):
    attended, _ = layer.multi_head_attention(h, positions, key_mask)
    h = h + layer.rms_norm_1(attended)
    return h + layer.rms_norm_3(layer.moe(h))


def _entropy_in_nats(probs):
    return jax.scipy.special.entr(probs).sum(-1)


def _entropy_with_nan(probs):
    return -(probs * jnp.log(probs)).sum(-1) / jnp.log(probs.shape[-1])


def _entropy_over_log_8(probs):
    return jax.scipy.special.entr(probs).sum(-1) / math.log(8)  # Grok-1's 8 experts, hard-coded


# ---- 08 generation ---------------------------------------------------------------------------------------------


def _top_k_exactly_k(logits, k):
    keep = jnp.zeros(logits.shape, bool).at[jnp.argsort(-logits)[:k]].set(True)
    return jnp.where(keep, logits, -jnp.inf)


def _top_k_strictly_above(logits, k):
    return jnp.where(logits > jnp.sort(logits)[-k], logits, -jnp.inf)


def _top_k_smallest(logits, k):
    return jnp.where(logits <= jnp.sort(logits)[k - 1], logits, -jnp.inf)


def _nucleus_without_the_crossing_token(logits, top_p):
    probs = jax.nn.softmax(logits)
    order = jnp.argsort(-probs)
    keep = jnp.zeros(logits.shape, bool).at[order].set(jnp.cumsum(probs[order]) <= top_p)
    return jnp.where(keep, logits, -jnp.inf)


def _nucleus_returning_probabilities(logits, top_p):
    return jax.nn.softmax(generation.nucleus_filter(logits, top_p))


def _nucleus_without_ties(logits, top_p):
    probs = jax.nn.softmax(logits)
    order = jnp.argsort(-probs)
    before = jnp.cumsum(probs[order]) - probs[order]
    keep = jnp.zeros(logits.shape, bool).at[order].set(before < top_p)
    return jnp.where(keep, logits, -jnp.inf)


# ---- 07 training ----------------------------------------------------------------------------------------------


def _summed_loss(logits, targets):
    return training.next_token_loss(logits, targets) * targets.size


def _loss_in_bits(logits, targets):
    return training.next_token_loss(logits, targets) / np.log(2)


def _loss_with_a_naive_softmax(logits, targets):
    probs = jnp.exp(logits) / jnp.exp(logits).sum(-1, keepdims=True)  # overflows for large logits
    return -jnp.log(jnp.take_along_axis(probs, targets[..., None], -1)).mean()


def _linear_decay(step, peak, warmup, total, final_fraction):
    if step < warmup:
        return peak * step / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return peak * (1 - (1 - final_fraction) * progress)


def _decay_to_zero(step, peak, warmup, total, final_fraction):
    return training.learning_rate(step, peak, warmup, total, 0.0)


def _no_warmup(step, peak, warmup, total, final_fraction):
    return peak if step < warmup else training.learning_rate(step, peak, warmup, total, final_fraction)


# ---- 09 the real weights -------------------------------------------------------------------------------------


def _numeric_layer_order(num_layers):
    return list(range(num_layers))


def _descending_layer_order(num_layers):
    return sorted(range(num_layers), key=str, reverse=True)


def _reversed_layer_order(num_layers):
    return list(range(num_layers))[::-1]


def _interleaved_blocks(weight, scales):
    blocks = scales.shape[0]
    return weight.astype(np.float32) * scales[np.arange(weight.shape[0]) % blocks]


def _averaged_scales(weight, scales):
    return weight.astype(np.float32) * np.asarray(scales, np.float32).mean(0)


def _divided_by_scales(weight, scales):
    return weight.astype(np.float32) / np.repeat(np.asarray(scales, np.float32), weight.shape[0] // scales.shape[0], 0)


MISTAKES = {
    "count_params": [("counted the embedding twice", _embedding_twice), ("ffn_size", _ffn_without_rounding),
                     ("num_kv_heads heads, not num_q_heads", _query_heads_for_kv),
                     ("active count", _active_experts_only)],
    "kv_cache_bytes": [("num_kv_heads", _cache_of_query_heads), ("2 bytes per value, not 4", _cache_in_float32),
                       ("keys and values", _cache_of_keys_only), ("each sequence", _cache_of_one_sequence)],
    "rms_norm": [("as is", _rms_plus_one), ("eps inside the square root", _rms_without_eps),
                 ("LayerNorm", _layer_norm), ("dtype", _rms_float32_out), ("float32 inside", _rms_in_input_dtype)],
    "tied_logits": [("multiply the logits by config.output_multiplier_scale", _logits_without_multiplier),
                    ("embedding_multiplier_scale is for the input side", _logits_with_the_input_multiplier),
                    ("don't divide", _logits_divided)],
    "rope_frequencies": [("2i/D", _frequencies_i_over_d), ("frequencies shrink with i", _frequencies_not_inverted),
                         ("start at i = 0", _frequencies_from_one)],
    "apply_rope": [("interleaved convention", _rope_interleaved), ("positions you are given", _rope_from_zero),
                   ("wrong way", _rope_backwards)],
    "kv_head_for": [("contiguously", _kv_head_modular), ("divide by the group size", _kv_head_divided_by_kv),
                    ("round down", _kv_head_rounded)],
    "attention": [("soft cap", _attention_uncapped), ("h // G", _attention_modular),
                  ("zero weight", _attention_unmasked), ("before the 1/√d scaling", _attention_capped_before_scaling)],
    "merge_pair": [("every occurrence", _merge_first_occurrence), ("whole pieces", _merge_joined_string),
                   ("scan from the left", _merge_right_to_left)],
    "decode_pieces": [("add_dummy_prefix", _decode_keeping_the_dummy_space),
                      ("only the one space", _decode_with_lstrip),
                      ("UTF-8 bytes", _decode_bytes_as_latin1), ("U\\+2581", _decode_leaving_the_markers)],
    "top2_route": [("renormalised", _renormalised_top2), ("renormalised", _softmax_of_top2_logits),
                   ("smallest", _bottom2), ("wrong order", _top2_second_first)],
    "balance_loss": [("N·k", _balance_not_divided_by_k), ("number of experts E", _balance_without_e),
                     ("mean router \\*probability\\*", _balance_of_loads_squared)],
    "decoder_layer": [("sandwich", _layer_without_post_norms), ("post-LN", _layer_normalising_the_sum),
                      ("normalised copy of h", _layer_without_pre_norms)],
    "normalized_entropy": [("divide by log E", _entropy_in_nats), ("0 · log 0", _entropy_with_nan),
                           ("hard-coded", _entropy_over_log_8)],
    "top_k_filter": [("k-th largest is kept too", _top_k_exactly_k), ("keep the k-th largest itself",
                                                                      _top_k_strictly_above),
                     ("not the smallest", _top_k_smallest)],
    "nucleus_filter": [("crosses top_p", _nucleus_without_the_crossing_token),
                       ("looks like probabilities", _nucleus_returning_probabilities),
                       ("tied with the last kept", _nucleus_without_ties)],
    "next_token_loss": [("do not sum", _summed_loss), ("natural logarithm", _loss_in_bits),
                        ("numerically stable", _loss_with_a_naive_softmax)],
    "learning_rate": [("cosine, not a straight line", _linear_decay), ("not to 0", _decay_to_zero),
                      ("warm up linearly", _no_warmup)],
    "layer_order": [("sorts module \\*names\\* as strings", _numeric_layer_order), ("not descending",
                                                                                     _descending_layer_order),
                    ("reversed", _reversed_layer_order)],
    "dequantize_blocks": [("blocks are contiguous", _interleaved_blocks), ("do not average", _averaged_scales),
                          ("multiply by the scale", _divided_by_scales)],
}


def _package_rms_norm(x, scale_, eps=1e-5):
    norm = RMSNorm(x.shape[-1], eps=eps)
    norm.scale[...] = scale_
    return norm(x)


def _package_attention(q, k, v, mask):
    group = q.shape[2] // k.shape[2]
    return jax.nn.dot_product_attention(q, jnp.repeat(k, group, 2), jnp.repeat(v, group, 2), mask=mask[:, None])


def _package_layer_order(num_layers):
    config = GrokConfig(num_layers=num_layers, vocab_size=16, emb_size=16, key_size=4, num_q_heads=2, num_kv_heads=1,
                        widening_factor=1.0, sequence_len=8)
    layers = [tensor.param[1] for tensor in release_layout(config) if tensor.param[0] == "decoder_layers"]
    return list(dict.fromkeys(layers))  # each layer once, in file order


def _package_learning_rate(step, peak, warmup, total, final_fraction):
    return float(optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, peak * final_fraction)(step))


USES_PACKAGE = {
    "count_params": lambda config: config.num_params,
    "kv_cache_bytes": lambda config, tokens, batch: config.kv_cache_bytes_per_token() * tokens * batch,
    "rms_norm": _package_rms_norm,
    "apply_rope": lambda x, positions: rotary_embedding(x, positions),
    "attention": _package_attention,
    "top2_route": lambda logits: moe.route(jnp.asarray(logits), 2),
    "balance_loss": lambda logits, num_selected: train.balance_loss(jnp.asarray(logits), num_selected),
    "decoder_layer": lambda layer, h, positions, key_mask: layer(h, positions, key_mask)[0],
    "top_k_filter": lambda logits, k: filter_logits(logits[None], jnp.array([k]), jnp.array([1.0]))[0],
    "nucleus_filter": lambda logits, top_p: filter_logits(logits[None], jnp.array([logits.shape[-1]]),
                                                          jnp.array([top_p]))[0],
    "next_token_loss": lambda logits, targets: optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(),
    "learning_rate": _package_learning_rate,
    "layer_order": _package_layer_order,
    "dequantize_blocks": lambda weight, scales: dequantize(weight, scales),
}
# No function of the package or of a library computes these in one call (the package does them
# only inside a larger function), so there is nothing to refuse.
NOTHING_TO_REFUSE = {"tied_logits", "rope_frequencies", "kv_head_for", "merge_pair", "decode_pieces",
                     "normalized_entropy"}


def hard_coded(solution):
    """A student who computed the right answer for one input and returns it for every input."""
    first = []

    def answer(*args, **kwargs):
        if not first:
            out = solution(*args, **kwargs)
            try:
                out = jax.tree.map(np.asarray, out)  # numbers, as pasted into a notebook
            except jax.errors.TracerArrayConversionError:
                pass  # inside the checker's jit: the traced value, which no later trace may use
            first.append(out)
        return first[0]
    return answer


# Wrong predictions: (words the checker's message must match, the value as an expression in the notebook).
WRONG_PREDICTIONS = {
    "active_expert_share": [("share of all parameters", "0.98"), ("share of the experts a token uses", "0.25"),
                            ("leaves unused", "0.75")],
    "buggy_line": [("combining the two rules", "6"), ("pad keys are the tokens", "5"), ("query positions", "2"),
                   ("key positions", "3")],
    "renormalised_change": [("only after rms_norm_3", "0.0"), ("uniform router", "3.0"), ("one half", "1.0")],
    "first_misordered": [("every name has one digit", "10"), ("first two-digit name", "20"),
                         ("much smaller models", "64")],
    "expert_multiply_adds": [("twice the truth", "2 * 3 * 6144 * 32768 / 1e6"),
                             ("counts two matrices", "2 * 6144 * 32768 / 1e6"),
                             ("eight times the width", "3 * 6144 * 8 * 6144 / 1e6"),
                             ("one matrix only", "6144 * 32768 / 1e6")],
    "silu_expert_change": [("approximation of GELU", "0.0"), ("conformance fixture", "0.26"),
                           ("half the output", "0.5"), ("as large as the output", "1.0")],
    "why_moe_top1_ratio": [("experts' ratio alone", "8.0"), ("own top-2 ratio", "total / active"),
                           ("doubles the top-2 ratio", "2 * total / active"), ("experts' ratio of top-2", "4.0")],
    "why_moe_batch_experts": [("batch 1's count", "2"), ("every expert for certain", "8"), ("token copies", "16"),
                              ("one choice", "8 * (1 - (7 / 8) ** 8)")],
    "renormalised_gradient": [("Grok's raw gates", "float(ratios['without'].mean())"), ("the same way", "1.0"),
                              ("not by half", "0.5")],
    "favoured_share": [("the balance loss takes it", "0.125"), ("half-way back", "0.25"), ("cannot exceed 1/2", "1.0")],
    "lab_worst": [("is not the worst", "'no balance loss'"), ("is not the worst", "'dense'"),
                  ("is not an experiment", "'top-2'")],
    "lab_seed_spread": [("too small", "0.0"), ("too large", "0.5"), ("should be a number", "'small'")],
    "lab_flops_ratio": [("halves only the experts' work", "0.5"), ("too large", "1.0"), ("too small", "0.25")],
}
