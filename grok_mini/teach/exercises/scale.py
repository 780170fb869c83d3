"""Notebook 00 (overview and scale): count the parameters, size the KV cache."""

from __future__ import annotations

from grok_mini.config import GrokConfig, preset
from grok_mini.config import GrokConfig as _Config
from grok_mini.teach.exercises import ExerciseFailed, call, check_prediction, expect_equal, run_check

__all__ = ["check_param_count", "check_kv_cache_bytes", "check_active_expert_share", "CONFIGS"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "count_params": (
        "Count one decoder layer first, then multiply by the number of layers; add what sits outside the "
        "layers.",
        "A layer holds the four attention projections (queries and outputs are wider than keys and values "
        "under grouped-query attention), three matrices for every expert, the router and four norm "
        "scales.",
        "Outside the layers: one embedding table (input and output are tied, so it counts once) and the "
        "final norm's scales; the expert width is the config's ffn_size, not widening_factor times the "
        "width.",
    ),
    "kv_cache_bytes": (
        "Write down what one token leaves behind in one layer, then scale up by layers, tokens and "
        "sequences.",
        "Each layer keeps a key vector and a value vector for every key/value head, not for every query "
        "head.",
        "Every stored number is a bfloat16 of two bytes, and keys and values are two separate tensors.",
    ),
}
# What would answer the exercise in one call (the package's own function, or a library's): refused.
REFUSE = {"count_params": (_Config.num_params, _Config.param_counts),
          "kv_cache_bytes": (_Config.kv_cache_bytes_per_token,)}

# Grok-1 itself, the presets, and one odd shape (1 K/V head, 3 of 5 experts, an FFN width that needs
# rounding up to a multiple of 8) so that an answer hard-wired to Grok-1's numbers cannot pass.
CONFIGS = {
    "grok-1": preset("grok-1"),
    "toy": preset("toy"),
    "small": preset("small"),
    "odd": GrokConfig(vocab_size=1000, emb_size=100, key_size=10, num_q_heads=4, num_kv_heads=1, num_layers=3,
                      widening_factor=3.3, num_experts=5, num_selected_experts=3, sequence_len=128),
}


def _integer(value, what: str) -> int:
    """Counts are whole numbers: accept Python and NumPy integers (and integral floats), nothing else."""
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ExerciseFailed(f"{what} should return one whole number, got {type(value).__name__} {value!r} "
                             "(use // rather than /)") from None
    return int(value)


def _count(c: GrokConfig, *, kv_heads=None, ffn=None, matrices=3, norms=True, router=True, embeddings=1) -> int:
    """Parameter count, with switches that reproduce common mistakes."""
    kv = c.num_kv_heads if kv_heads is None else kv_heads
    f = c.ffn_size if ffn is None else ffn
    d = c.emb_size
    attention = 2 * d * c.num_q_heads * c.key_size + 2 * d * kv * c.key_size
    layer = attention + c.num_experts * matrices * d * f
    layer += (d * c.num_experts if router else 0) + (4 * d if norms else 0)
    return embeddings * c.vocab_size * d + c.num_layers * layer + (d if norms else 0)


def check_param_count(count_params) -> bool:
    """count_params(config) → total parameters of a Grok-shaped model (tied embedding counted once)."""

    def check():
        for name, c in CONFIGS.items():
            got = _integer(call(count_params, c), f"count_params({name} config)")
            mistakes = [
                (_count(c, embeddings=2), "you counted the embedding twice: Grok-1 ties input and output "
                                          "(in_out_embed is used for both)."),
                (_count(c, embeddings=0), "you left out the embedding table (vocab_size × emb_size)."),
                (_count(c, kv_heads=c.num_q_heads), "keys and values have num_kv_heads heads, not num_q_heads "
                                                    "(grouped-query attention)."),
                (_count(c, ffn=int(c.widening_factor * c.emb_size)),
                 "the expert width is config.ffn_size = int(widening_factor·emb)·2//3 rounded up to a multiple "
                 "of 8, not widening_factor·emb."),
                (_count(c, matrices=2), "each expert has three matrices: linear (gate), linear_v (value), "
                                        "linear_1 (down)."),
                (_count(c, norms=False), "you left out the RMSNorm scales: 4 per layer plus the final one, "
                                         "emb_size each."),
                (_count(c, router=False), "you left out the router (emb_size × num_experts per layer)."),
                (_count(c) - c.emb_size, "the final RMSNorm after the last layer has emb_size scales too."),
                (_count(c) - c.num_layers * c.num_experts * 3 * c.emb_size * c.ffn_size * (
                    c.num_experts - c.num_selected_experts) // c.num_experts,
                 "that is the active count (selected experts only); count all experts."),
            ]
            expect_equal(got, c.num_params, what=f"count_params({name} config)", mistakes=mistakes)
        return f"{len(CONFIGS)} configs, Grok-1 = {CONFIGS['grok-1'].num_params:,}"

    return run_check("count_params", check, answer=count_params,
                     hints=HINTS["count_params"], refuse=REFUSE["count_params"])


def check_kv_cache_bytes(kv_cache_bytes) -> bool:
    """kv_cache_bytes(config, tokens, batch) → bytes of the bf16 KV cache of all layers."""

    def check():
        cases = [("grok-1", 8192, 1), ("grok-1", 1024, 4), ("toy", 256, 8), ("odd", 100, 3)]
        for name, tokens, batch in cases:
            c = CONFIGS[name]
            got = _integer(call(kv_cache_bytes, c, tokens, batch), f"kv_cache_bytes({name}, ...)")
            expected = c.kv_cache_bytes_per_token() * tokens * batch
            per_value = c.num_layers * c.num_kv_heads * c.key_size * tokens * batch
            mistakes = [
                (per_value * 2 * 2 * c.num_q_heads // c.num_kv_heads,
                 "the cache stores num_kv_heads heads, not num_q_heads: that is the point of GQA."),
                (per_value * 2, "keep both keys and values (×2), each in bfloat16 (2 bytes)."),
                (per_value * 2 * 4, "bfloat16 is 2 bytes per value, not 4."),
                (expected // c.num_layers, "every layer has its own keys and values (× num_layers)."),
                (expected // batch, "each sequence in the batch has its own cache (× batch)."),
            ]
            expect_equal(got, expected,
                         what=f"kv_cache_bytes({name}, tokens={tokens}, batch={batch})", mistakes=mistakes)
        grok = CONFIGS["grok-1"]
        return f"Grok-1 at 8,192 tokens: {grok.kv_cache_bytes_per_token() * 8192 / 2**30:.0f} GiB per sequence"

    return run_check("kv_cache_bytes", check, answer=kv_cache_bytes,
                     hints=HINTS["kv_cache_bytes"], refuse=REFUSE["kv_cache_bytes"])


def check_active_expert_share(share) -> bool:
    """Exercise 3 (derive, then check): the share of a token's active parameters that are expert weights."""
    c = CONFIGS["grok-1"]
    counts = c.param_counts()
    active_experts = counts["experts"] * c.num_selected_experts // c.num_experts
    return check_prediction(
        "active_expert_share", share, active_experts / c.num_active_params, tolerance=0.02, variable="share",
        why=f"{active_experts / 1e9:.1f} B of the {c.num_active_params / 1e9:.1f} B active parameters: the two chosen "
            "experts still dominate, but attention and the embedding now weigh 8 %, four times their share of all "
            "weights",
        mistakes=[(counts["experts"] / c.num_params, "that is the experts' share of all parameters; a token uses only "
                                                     "2 of the 8 experts, and all of everything else"),
                  (c.num_selected_experts / c.num_experts, "2 of 8 is the share of the experts a token uses, not the "
                                                           "experts' share of what it uses"),
                  (1 - c.num_selected_experts / c.num_experts, "that is the share of the expert weights a token leaves "
                                                               "unused")],
        hints=("Count what one token touches: all of attention, the router, the norms and the embedding, and only the "
               "chosen experts.",
               "The active count is printed above; the expert count is one entry of param_counts.",
               "Take a quarter of all expert weights (2 of 8 experts) and divide by the active count."))
