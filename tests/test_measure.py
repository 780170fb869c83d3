"""benchmarks/measure.py's byte counts, against sizes counted by hand."""

import jax.numpy as jnp
from flax import nnx

from benchmarks import measure
from grok_mini import Grok
from tests.conftest import TINY


def test_decode_bytes_by_batch_and_embedding_dtype():
    model = Grok(TINY, param_dtype=jnp.int8, rngs=nnx.Rngs(0))
    read = measure.decode_bytes(model)
    experts = sum(measure.array_bytes(layer.moe.experts) for layer in model.decoder_layers)
    share = TINY.num_selected_experts / TINY.num_experts
    assert read.weights == measure.array_bytes(model)
    assert read.token_weights == int(read.weights - experts + experts * share)
    assert read.batch_weights == read.token_weights  # one token: its k experts
    many = measure.decode_bytes(model, batch=64)
    assert read.token_weights < many.batch_weights <= many.weights
    assert many.weights - many.batch_weights < experts * 0.01  # 1 - (1 - k/E)^64: nearly every expert
    model.in_out_embed.set_value(model.in_out_embed.get_value().astype(jnp.bfloat16))
    assert read.weights - measure.decode_bytes(model).weights == TINY.vocab_size * TINY.emb_size * 2
