"""Reference solutions for notebook 00 (overview and scale). Checked by grok_mini.teach.exercises.scale."""


def count_params(config) -> int:
    d, layers = config.emb_size, config.num_layers
    attention = d * config.num_q_heads * config.key_size  # query
    attention += 2 * d * config.num_kv_heads * config.key_size  # key and value: only the K/V heads
    attention += config.num_q_heads * config.key_size * d  # output projection ("linear")
    experts = config.num_experts * 3 * d * config.ffn_size  # linear (gate), linear_v (value), linear_1 (down)
    router = d * config.num_experts
    norms = 4 * d  # rms_norm, rms_norm_1, rms_norm_2, rms_norm_3
    embedding = config.vocab_size * d  # tied: the same table embeds and scores
    return embedding + layers * (attention + experts + router + norms) + d  # + the final norm


def kv_cache_bytes(config, tokens: int, batch: int) -> int:
    bf16 = 2
    per_token = 2 * config.num_layers * config.num_kv_heads * config.key_size * bf16  # keys and values
    return per_token * tokens * batch
