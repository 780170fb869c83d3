"""Time the official Grok-1 code's forward pass on weights another process wrote (run by cpu_int8.py).

    PYTHON official_forward.py GROK1_CHECKOUT WEIGHTS.npz CONFIG.json OUT.npz

PYTHON is an environment with what xai-org/grok-1's requirements pin (jax 0.4.25, dm-haiku 0.0.12),
GROK1_CHECKOUT a clone of that repository: its `model.py` is imported from there, never copied here.
WEIGHTS.npz holds the input "tokens" [B, T] and one array per release parameter path
("transformer/decoder_layer_0/moe/linear/w"), an int8 matrix's scales under PATH + ".scales";
CONFIG.json the config's official field names and "repeats".

On one device the official code needs one scale block per matrix (its shard_map multiplies a device's
rows by [..., 1, out] scales), so the caller gives it such weights. Writes the bfloat16 logits [B, T, V]
(as float32) and the median seconds of `repeats` forward calls, after one warm-up call, to OUT.npz.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

# The official config classes' fields that a GrokConfig names the same way.
LM_FIELDS = ("vocab_size", "pad_token", "eos_token", "sequence_len", "embedding_multiplier_scale",
             "output_multiplier_scale")
MODEL_FIELDS = ("emb_size", "key_size", "num_q_heads", "num_kv_heads", "num_layers", "vocab_size", "widening_factor",
                "attn_output_multiplier", "num_experts", "num_selected_experts")


def main(checkout: str, weights_path: str, config_path: str, out_path: str) -> None:
    sys.path.insert(0, checkout)
    import haiku as hk
    import jax
    import jax.numpy as jnp
    from model import LanguageModelConfig, QuantizedWeight8bit, TransformerConfig  # the official code

    c = json.loads(open(config_path).read())
    transformer = TransformerConfig(**{name: c[name] for name in MODEL_FIELDS}, shard_activations=True)
    lm = LanguageModelConfig(**{name: c[name] for name in LM_FIELDS}, model=transformer)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))

    stored = np.load(weights_path)
    params: dict[str, dict] = {}
    for path in stored.files:
        if path == "tokens" or path.endswith(".scales"):
            continue
        module, name = path.rsplit("/", 1)
        value = jnp.asarray(stored[path])
        if path + ".scales" in stored.files:
            value = QuantizedWeight8bit(weight=value, scales=jnp.asarray(stored[path + ".scales"], jnp.bfloat16))
        params.setdefault(module, {})[name] = value
    tokens = jnp.asarray(stored["tokens"])

    forward = hk.transform(lambda tokens: lm.make(mesh=mesh)(tokens).logits)
    with mesh:
        run = jax.jit(lambda params, tokens: forward.apply(params, None, tokens))
        logits = jax.block_until_ready(run(params, tokens))  # warm-up: compiles
        samples = []
        for _ in range(int(c.get("repeats", 3))):
            start = time.perf_counter()
            jax.block_until_ready(run(params, tokens))
            samples.append(time.perf_counter() - start)
    np.savez(out_path, logits=np.asarray(logits, np.float32), seconds=statistics.median(samples),
             versions=json.dumps({"jax": jax.__version__, "haiku": hk.__version__}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
