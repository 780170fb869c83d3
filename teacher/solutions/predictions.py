"""Answers to the prediction exercises, as the expression a student would evaluate in the notebook.

ANSWERS[grade_id] is evaluated in the notebook's namespace and assigned to the answer cell's
variable; NAMES maps a grade_id to the exercise's name in the gradebook where the two differ.
"""

ANSWERS = {
    # 00: a quarter of the expert weights (2 of 8 experts), over what one token uses
    "active_expert_share": "config.param_counts()['experts'] / 4 / config.num_active_params",
    # 04: `key < query` hides each token from itself; the causal rule is key <= query
    "buggy_line": "4",
    # 05: each token's output is multiplied by 1 / (g1 + g2): about one over the mean gate sum, minus one
    "renormalised_change": "float(1 / gates[0].sum(-1).mean() - 1)",
    # 09: layer 10 is the first two-digit name, and it sorts before layer 2
    "first_misordered": "11",
    # 11: three matrices of width × expert width, one multiply-add per weight (in millions)
    "expert_multiply_adds": "3 * grok.emb_size * grok.ffn_size / 1e6",
    "silu_expert_change": "draw.relative_change(experts_np(0, silu_np), experts_np(0, gelu_tanh_np))",
    # 12: the experts shrink to one of 8 a token; what a batch of 8 tokens' 2 choices covers
    "why_moe_top1_ratio": "(lambda c: c.num_params / c.num_active_params)(dataclasses.replace(config, "
                          "num_selected_experts=1))",
    "why_moe_batch_experts": "E * (1 - (1 - k / E) ** 8)",
    # 13: renormalised gates cancel the softmax's shared denominator: nothing reaches unchosen experts
    "renormalised_gradient": "0.0",
    "favoured_share": "checks.favoured_share(runs['favoured-none'])",
    # 10: read from the stored sweep
    "lab_worst": "max(lab.final_table(SWEEP), key=lambda row: row['mean'])['experiment']",
    "lab_seed_spread": "lab.seed_spread(SWEEP)",
    "lab_flops_ratio": "(lambda f: f['top-1'] / f['grok-1'])({r['experiment']: r['flops_per_token'] "
                       "for r in lab.final_table(SWEEP)})",
}
NAMES = {"lab_worst": "the worst experiment", "lab_seed_spread": "the seed spread",
         "lab_flops_ratio": "the FLOPs ratio", "why_moe_top1_ratio": "the top-1 parameter ratio",
         "why_moe_batch_experts": "the experts a batch reads"}
