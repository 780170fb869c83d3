"""Every MoE dispatch computes the dense reference's function: values and gradients, int8 weights too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_mini import Grok, GrokConfig, moe
from grok_mini.layers import Linear
from tests.conftest import TINY, relative_error

E, K = 8, 2
CONFIG = GrokConfig(vocab_size=97, emb_size=16, key_size=8, num_q_heads=2, num_kv_heads=1, num_layers=1,
                    widening_factor=3.0, sequence_len=64)  # ffn_size 32, so linear_1 splits into 8 blocks of 4


@pytest.fixture(autouse=True)
def exact_float32_matmuls():
    """The float32 comparisons here hold to 1e-5; a GPU's default float32 matmul (TF32) is off by about 3e-4."""
    with jax.default_matmul_precision("highest"):
        yield


def make_experts(param_dtype=jnp.float32, dtype=jnp.float32, seed=0) -> moe.Experts:
    return moe.Experts(CONFIG, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))


def routing(kind: str, n: int, seed: int = 1) -> tuple[jax.Array, jax.Array]:
    """(gates [N, k], expert ids [N, k]) from route() on random logits shaped by `kind`."""
    logits = jax.random.normal(jax.random.key(seed), (n, E))
    if kind == "uneven":  # expert 0 is every token's first choice
        logits = logits.at[:, 0].add(10.0)
    elif kind == "empty":  # experts 3, 5, 6, 7 are never chosen
        logits = logits.at[:, jnp.array([3, 5, 6, 7])].set(-jnp.inf)
    return moe.route(logits, K)


def explicit_routing(ids: list[tuple[int, int]], seed: int = 1) -> tuple[jax.Array, jax.Array]:
    gates = jax.random.uniform(jax.random.key(seed), (len(ids), K), minval=0.1, maxval=0.6)
    return gates, jnp.array(ids, jnp.int32)


def reference(experts, x, gates, ids):
    return moe.dense_moe(experts, x, moe.gate_matrix(gates, ids, E))


DISPATCHES = {
    "official": moe.official_dense_moe,
    "sparse": moe.sparse_moe,  # default tile size: one tile per expert at these sizes
    "sparse_tiles_of_4": lambda e, x, g, i: moe.sparse_moe(e, x, g, i, tile_rows=4),
    "sparse_tiles_of_1": lambda e, x, g, i: moe.sparse_moe(e, x, g, i, tile_rows=1),
    "ragged": moe.ragged_moe,
    "capacity_no_drop": lambda e, x, g, i: moe.capacity_moe(e, x, g, i, capacity_factor=E / K)[0],
}


@pytest.fixture(scope="module")
def experts():
    return make_experts()


@pytest.fixture(scope="module")
def int8_experts():
    return make_experts(param_dtype=jnp.int8)


@pytest.mark.parametrize("name", DISPATCHES)
def test_dispatch_values_equal_reference(name, experts):
    x = jax.random.normal(jax.random.key(2), (29, CONFIG.emb_size))
    want, got = nnx.jit(reference), nnx.jit(DISPATCHES[name])
    for kind in ("random", "uneven", "empty"):
        gates, ids = routing(kind, 29)
        assert relative_error(got(experts, x, gates, ids), want(experts, x, gates, ids)) < 1e-5, kind


@pytest.mark.parametrize("name", ["official", "sparse_tiles_of_4", "ragged", "capacity_no_drop"])
def test_dispatch_gradients_equal_reference(name, experts):
    """d/dx, d/dgates and d/d(every expert weight) of <out, cotangent> agree with the reference's."""
    x = jax.random.normal(jax.random.key(3), (23, CONFIG.emb_size))
    cotangent = jax.random.normal(jax.random.key(4), x.shape)

    def gradients(dispatch):
        def loss(experts, x, gates, ids):
            return jnp.sum(dispatch(experts, x, gates, ids) * cotangent)
        return nnx.jit(nnx.grad(loss, argnums=(0, 1, 2)))

    want_fn, got_fn = gradients(reference), gradients(DISPATCHES[name])
    for kind in ("uneven", "empty"):
        gates, ids = routing(kind, 23)
        want_w, want_x, want_g = want_fn(experts, x, gates, ids)
        got_w, got_x, got_g = got_fn(experts, x, gates, ids)
        assert relative_error(got_x, want_x) < 1e-5
        assert relative_error(got_g, want_g) < 1e-5
        got_w = dict(nnx.to_flat_state(got_w))
        for path, want in nnx.to_flat_state(want_w):
            assert relative_error(got_w[path][...], want[...]) < 1e-5, (kind, path)


@pytest.mark.parametrize("tile_rows, ids", [
    # every expert's count is odd: each needs one padding row, the most tiles of 2 any routing can use
    (2, [(0, e) for e in (1, 2, 3, 4, 5, 6, 7, 4, 5)] + [(6, 7), (6, 7), (4, 5)]),
    # 8 copies on 8 experts: 8 tiles of 4, one row each (the bound "at most one tile per copy")
    (4, [(0, 1), (2, 3), (4, 5), (6, 7)]),
    # every expert used, tiles as tall as the batch: one tile each (the bound "E tiles of N rows")
    (8, [(0, 1), (2, 3), (4, 5), (6, 7), (1, 0), (3, 2), (5, 4), (7, 6)]),
])
def test_sparse_worst_case_tile_counts(tile_rows, ids, experts):
    gates, ids = explicit_routing(ids)
    x = jax.random.normal(jax.random.key(5), (ids.shape[0], CONFIG.emb_size))
    got = nnx.jit(moe.sparse_moe, static_argnames="tile_rows")(experts, x, gates, ids, tile_rows=tile_rows)
    assert relative_error(got, nnx.jit(reference)(experts, x, gates, ids)) < 1e-5


def test_sparse_in_bfloat16_within_bfloat16_tolerance():
    experts = make_experts(dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(6), (31, CONFIG.emb_size))
    gates, ids = routing("random", 31)
    got = nnx.jit(moe.sparse_moe)(experts, x, gates, ids)
    exact = nnx.jit(reference)(make_experts(), x, gates, ids)  # same weights (same seed) in float32
    assert relative_error(got, exact) < 2e-2


# ---- capacity: dropped copies --------------------------------------------------------------------

def expected_kept(ids: np.ndarray, capacity: int) -> np.ndarray:
    """[N, k] bool: copies admitted in choice-major order (all first choices, then second), C per expert."""
    taken = np.zeros(E, int)
    kept = np.zeros(ids.shape, bool)
    for choice in range(ids.shape[1]):
        for token in range(ids.shape[0]):
            expert = ids[token, choice]
            kept[token, choice] = taken[expert] < capacity
            taken[expert] += 1
    return kept


@pytest.mark.parametrize("capacity_factor", [1.0, 1.5])
def test_capacity_drops_and_counts_copies_over_capacity(capacity_factor, experts):
    n = 24
    x = jax.random.normal(jax.random.key(7), (n, CONFIG.emb_size))
    gates, ids = routing("uneven", n)  # expert 0 receives all 24 first choices
    capacity = moe.expert_capacity(n, K, E, capacity_factor)
    assert capacity == int(np.ceil(n * K / E * capacity_factor))
    kept = expected_kept(np.asarray(ids), capacity)
    assert not kept.all()

    out, dropped = nnx.jit(moe.capacity_moe, static_argnums=4)(experts, x, gates, ids, capacity_factor)
    assert int(dropped) == (~kept).sum()
    want = nnx.jit(reference)
    assert relative_error(out, want(experts, x, gates * kept, ids)) < 1e-5  # a dropped copy contributes nothing
    assert relative_error(out, want(experts, x, gates, ids)) > 1e-2  # and dropping is visible


def test_capacity_layer_records_dropped_copies():
    layer = moe.MoELayer(TINY, dtype=jnp.float32, rngs=nnx.Rngs(0), dispatch="capacity", capacity_factor=0.5)
    nnx.jit(lambda layer, x: layer(x))(layer, jax.random.normal(jax.random.key(0), (2, 20, TINY.emb_size)))
    dropped = nnx.state(layer, nnx.Intermediate)["dropped_copies"]
    # 40 tokens · 2 copies on 8 experts of capacity 5: at least half of the 80 copies are dropped
    assert int(dropped[...]) >= 40


# ---- int8 weights: dequantised block by block inside the matmul ----------------------------------

@pytest.mark.parametrize("name", ["official", "sparse_tiles_of_4", "ragged", "capacity_no_drop"])
def test_int8_experts_equal_dequantise_first(name, int8_experts):
    experts = int8_experts
    assert experts.linear.w[...].dtype == jnp.int8 and experts.linear_1.scales[...].shape == (E, 8, CONFIG.emb_size)
    x = jax.random.normal(jax.random.key(8), (27, CONFIG.emb_size))
    gates, ids = routing("uneven", 27)
    want = nnx.jit(reference)(experts, x, gates, ids)  # dense_moe multiplies by kernel(): dequantised first
    assert relative_error(nnx.jit(DISPATCHES[name])(experts, x, gates, ids), want) < 1e-5


@pytest.mark.parametrize("blocks", [1, 8])
def test_int8_linear_equals_dequantise_first(blocks):
    """The attention projections' int8 path (Linear.__call__) against x · kernel()."""
    linear = Linear(64, 24, blocks=blocks, dtype=jnp.float32, param_dtype=jnp.int8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(9), (3, 5, 64))
    assert linear.scales[...].shape == (blocks, 24)
    blockwise, dequantised_first = nnx.jit(lambda linear, x: (linear(x), x @ linear.kernel()))(linear, x)
    assert relative_error(blockwise, dequantised_first) < 1e-5


# ---- the layer and the model ---------------------------------------------------------------------

def test_model_uses_sparse_dispatch_by_default_and_dense_on_request():
    model = Grok(TINY, dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert all(layer.moe.dispatch == "sparse" for layer in model.decoder_layers)
    dense = Grok(TINY, dtype=jnp.float32, rngs=nnx.Rngs(0), dispatch="dense")  # the plain reference the notebooks show
    assert all(layer.moe.dispatch == "dense" for layer in dense.decoder_layers)
    with pytest.raises(ValueError, match="'fastest' is not one of"):
        Grok(TINY, dispatch="fastest")


def test_the_dispatch_follows_the_mesh():
    """An expert axis gets the dense dispatch (each device its own experts); other meshes the sparse one."""
    import numpy as np
    from jax.sharding import Mesh

    devices = np.array(jax.devices()[:1] * 2)  # the axis sizes are what matters, not distinct devices
    assert moe.default_dispatch(None) == "sparse"
    assert moe.default_dispatch(Mesh(devices.reshape(1, 2, 1), ("data", "expert", "model"))) == "dense"
    assert moe.default_dispatch(Mesh(devices.reshape(1, 1, 2), ("data", "expert", "model"))) == "sparse"


def test_recording_restores_the_switches_and_takes_the_recordings_out():
    from grok_mini import recording

    model = Grok(TINY, dtype=jnp.float32, rngs=nnx.Rngs(0))
    tokens = jnp.array([[1, 2, 3, 4]])
    with recording(model, router=True, residual=True) as recorded:
        model(tokens)
    layer = recorded.state["decoder_layers"][0]
    assert layer["moe"]["router_logits"][...].shape == (1, 4, TINY.num_experts)
    assert layer["residual_rms"][...].shape == (1, 4) and "multi_head_attention" not in layer
    assert not nnx.state(model, nnx.Intermediate)  # taken out of the model
    with pytest.raises(RuntimeError, match="inside"):  # restored even when the block fails
        with recording(model, attention=True):
            raise RuntimeError("a failure inside the block")
    assert not any(layer.multi_head_attention.record_attention for layer in model.decoder_layers)


def test_layer_sparse_and_dense_agree():
    layer = moe.MoELayer(TINY, dtype=jnp.float32, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(10), (2, 16, TINY.emb_size))
    sparse = nnx.jit(lambda layer, x: layer(x))(layer, x)
    layer.dispatch = "dense"
    assert relative_error(sparse, nnx.jit(lambda layer, x: layer(x))(layer, x)) < 1e-5


def test_unknown_dispatch_is_refused_by_name():
    with pytest.raises(ValueError, match="'fast'.*sparse, ragged, capacity, dense, official"):
        moe.MoELayer(TINY, rngs=nnx.Rngs(0), dispatch="fast")
    layer = moe.MoELayer(TINY, rngs=nnx.Rngs(0))
    layer.dispatch = "desne"
    with pytest.raises(ValueError, match="'desne'"):
        layer(jnp.zeros((1, 2, TINY.emb_size)))
