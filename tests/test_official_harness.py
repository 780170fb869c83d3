"""benchmarks/cpu_int8.py hands the official code the weights our model runs, under the release's names."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

import grok_mini
from benchmarks.cpu_int8 import benchmark_config, one_scale_block, release_arrays
from grok_mini.checkpoint import release_layout


def test_the_official_code_gets_every_parameter_with_the_numbers_ours_multiplies_by():
    config = benchmark_config(128)
    model = one_scale_block(grok_mini.Grok(config, dtype=jnp.float32, rngs=nnx.Rngs(0)))
    arrays = release_arrays(model)
    layout = release_layout(config)
    assert sorted(name for name in arrays if not name.endswith(".scales")) == sorted(t.path for t in layout)

    ours = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    int8 = [t for t in layout if t.blocks is not None]
    assert {t.blocks for t in int8} == {1, 8}  # the release's 8-block matrices are among them
    for tensor in int8:
        weight, scales = arrays[tensor.path], arrays[tensor.path + ".scales"]
        assert weight.dtype == np.int8 and scales.shape[-2] == 1  # what the official shard_map takes on one device
        theirs = weight.astype(np.float32) * scales  # the official dequantisation, w · s
        linear_scales = ours[(*tensor.param[:-1], "scales")].get_value()
        rows = np.repeat(np.asarray(linear_scales, np.float32), weight.shape[-2] // linear_scales.shape[-2], axis=-2)
        np.testing.assert_array_equal(theirs, np.asarray(ours[tensor.param].get_value(), np.float32) * rows)
    for tensor in layout:
        if tensor.blocks is None:  # embedding, norms, router: float32 as they are
            np.testing.assert_array_equal(arrays[tensor.path], np.asarray(ours[tensor.param].get_value()))
