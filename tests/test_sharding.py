"""Sharding: the mesh, the partition rules, slice-by-slice loading, and the official logits on 8 devices.

The multi-device tests run in one subprocess with 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before JAX starts, and the rest of
the suite runs on one device). The worker is this file run as a module; it prints one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from grok_mini import Grok, GrokConfig, MeshError, load_checkpoint, make_mesh, preset, sharding
from grok_mini.load import dequantized_slices, shard_model
from grok_mini.params import param_row
from grok_mini.quant import dequantize, quantize
from tests.conftest import FIXTURE, TINY

ROOT = Path(__file__).resolve().parent.parent
F32_BOUND = 1e-4  # the fixture README's float32 bound

# data × expert × model; the first six are the data × model meshes.
MESHES = {"1x1": (1, 1, 1), "1x2": (1, 1, 2), "2x2": (2, 1, 2), "1x8": (1, 1, 8), "2x4": (2, 1, 4),
          "8x1": (8, 1, 1), "expert8": (1, 8, 1), "data2-expert2-model2": (2, 2, 2)}
KERNEL_MESHES = ("1x1", "1x8", "expert8", "data2-expert2-model2")


# ---- the mesh ---------------------------------------------------------------------------------------

def test_default_mesh_puts_every_device_on_the_model_axis():
    mesh = make_mesh()
    assert mesh.axis_names == ("data", "expert", "model")
    assert dict(mesh.shape) == {"data": 1, "expert": 1, "model": len(jax.devices())}


def test_mesh_that_does_not_match_the_devices_is_refused():
    with pytest.raises(MeshError, match=r"data=1 × expert=1 × model=2 = 2 devices, but 1 are visible"):
        make_mesh(model=2)
    with pytest.raises(MeshError, match="expert must be a positive integer, got 0"):
        make_mesh(expert=0)


@pytest.mark.parametrize("sizes, message", [
    ({"model": 3}, "mesh model=3 does not divide num_q_heads=16"),
    ({"model": 32}, "mesh model=32 does not divide num_q_heads=16"),
    ({"expert": 3}, "mesh expert=3 does not divide num_experts=8"),
])
def test_mesh_that_cannot_split_the_model_names_the_value(fixture_config, sizes, message):
    with pytest.raises(MeshError, match=message):
        sharding.check_mesh(fixture_config, sizes)


def test_grok1_fits_tensor_parallel_up_to_its_eight_kv_heads():
    grok1 = preset("grok-1")
    for model in (1, 2, 4, 8):
        sharding.check_mesh(grok1, {"model": model, "expert": 8})
    with pytest.raises(MeshError, match=r"model=16 does not divide num_kv_heads=8 .*1, 2, 4, 8"):
        sharding.check_mesh(grok1, {"model": 16})


@pytest.mark.parametrize("mesh, message", [("1,1,2", "model=2 = 2 devices, but 1 are visible"),
                                           ("2x4", "--mesh: expected DATA,EXPERT,MODEL")])
def test_cli_generate_refuses_a_mesh_it_cannot_build(capsys, mesh, message):
    from grok_mini.cli import main

    assert main(["generate", str(FIXTURE), "--ids", "5,6", "--max-new-tokens", "2", "--mesh", mesh]) == 1
    assert message in capsys.readouterr().err


# ---- the rules --------------------------------------------------------------------------------------

def _param_shapes(config, param_dtype):
    abstract = nnx.eval_shape(lambda: Grok(config, dtype=jnp.bfloat16, param_dtype=param_dtype))
    return {".".join(map(str, path)): v.shape for path, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.int8])
def test_every_parameter_has_an_explicit_rule(param_dtype):
    for path in _param_shapes(TINY, param_dtype):
        assert param_row(path) is not None, f"no row in params.PARAMS (so no partition rule) for {path}"


def test_grok1_layout_on_eight_devices():
    """The release's tensor-parallel layout on model=8, and the expert axis splitting experts."""
    shapes = _param_shapes(preset("grok-1-1layer"), jnp.int8)
    tp = {"data": 1, "expert": 1, "model": 8}
    spec = lambda path, mesh=tp: sharding.partition_spec(path, shapes[path], mesh)  # noqa: E731
    layer = "decoder_layers.0."
    assert spec("in_out_embed") == P(None, "model")
    assert spec(layer + "multi_head_attention.query.w") == P(None, "model")
    assert spec(layer + "multi_head_attention.query.scales") == P(None, "model")  # [1, out]
    assert spec(layer + "multi_head_attention.linear.w") == P("model", None)
    assert spec(layer + "multi_head_attention.linear.scales") == P("model", None)  # one block a device
    assert spec(layer + "moe.experts.linear.w") == P("expert", None, "model")
    assert spec(layer + "moe.experts.linear_1.w") == P("expert", "model", None)
    assert spec(layer + "moe.experts.linear_1.scales") == P("expert", "model", None)
    assert spec(layer + "moe.router.w") == P(None, None)
    assert spec(layer + "rms_norm_2.scale") == P(None)
    ep = {"data": 1, "expert": 8, "model": 1}
    assert spec(layer + "moe.experts.linear_v.w", ep) == P("expert", None, "model")


@pytest.mark.parametrize("model, blocks_axis", [(1, "model"), (2, "model"), (4, "model"), (8, "model"),
                                                (16, None), (3, None)])
def test_block_scales_split_with_their_rows_only_when_the_blocks_divide(model, blocks_axis):
    spec = sharding.partition_spec("decoder_layers.0.multi_head_attention.linear.scales", (8, 6144),
                                   {"data": 1, "expert": 1, "model": model})
    assert spec == P(blocks_axis, None)


@pytest.mark.parametrize("index", [
    (slice(None), slice(None), slice(None)),
    (slice(1, 3), slice(0, 32), slice(8, 24)),  # whole blocks of rows, some columns
    (slice(2, 3), slice(3, 29), slice(None)),  # rows that start and end inside a block
    (slice(None), slice(16, 20), slice(0, 1)),
])
def test_dequantised_slice_equals_the_slice_of_the_dequantised_weight(index):
    w = np.random.default_rng(0).normal(size=(4, 64, 32)).astype(np.float32)
    q = quantize(w, 8)  # 8 blocks of 8 rows
    whole = dequantize(q.weight, q.scales, np.float32)
    part = dequantized_slices(q, np.float32)(index)
    np.testing.assert_array_equal(part, whole[index])
    assert dequantized_slices(q, jnp.bfloat16)(index).dtype == jnp.bfloat16


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.int8])
def test_abstract_model_is_what_tracing_the_whole_constructor_gives(fixture_config, param_dtype):
    fast = Grok.abstract(fixture_config, dtype=jnp.float32, param_dtype=param_dtype)
    traced = nnx.eval_shape(lambda: Grok(fixture_config, dtype=jnp.float32, param_dtype=param_dtype))
    (fast_graph, fast_state), (graph, state) = nnx.split(fast), nnx.split(traced)
    assert fast_graph == graph  # same modules, attributes (config included) and layer count
    shapes = lambda s: {p: (v.get_value().shape, v.get_value().dtype) for p, v in nnx.to_flat_state(s)}  # noqa: E731
    assert shapes(fast_state) == shapes(state)
    assert fast.decoder_layers[0] is not fast.decoder_layers[3]


def test_shard_model_lays_out_an_in_memory_model_without_changing_it(fixture_config):
    model = load_checkpoint(FIXTURE, fixture_config, dtype=jnp.float32, quantized=True)
    before = {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    placed = shard_model(model, make_mesh())
    after = dict(nnx.to_flat_state(nnx.state(placed, nnx.Param)))
    assert after[("decoder_layers", 1, "moe", "experts", "linear_1", "scales")].get_value().sharding.spec == \
        P("expert", "model", None)
    for path, value in before.items():
        np.testing.assert_array_equal(np.asarray(after[path].get_value()), value)


# ---- 8 simulated devices: the official logits on every mesh -----------------------------------------

def _worker() -> dict:
    """Runs in the subprocess: load the fixture on every mesh, both ways, and report."""
    from grok_mini import generate
    from tests.conftest import relative_error

    assert len(jax.devices()) == 8, jax.devices()
    config = GrokConfig.from_json(FIXTURE / "config.json")
    reference = dict(np.load(FIXTURE / "reference.npz"))
    logits_of = jax.jit(lambda graphdef, state, tokens: nnx.merge(graphdef, state)(tokens), static_argnums=0)
    results = {}
    for name, (data, expert, model) in MESHES.items():
        mesh = make_mesh(data=data, expert=expert, model=model, devices=jax.devices()[:data * expert * model])
        for quantized in (False, True):
            loaded = load_checkpoint(FIXTURE, config, dtype=jnp.float32, quantized=quantized, mesh=mesh)
            graphdef, state = nnx.split(loaded)
            logits = np.asarray(logits_of(graphdef, state, sharding.shard_tokens(reference["tokens"], mesh)))
            experts = loaded.decoder_layers[0].moe.experts
            moe_mesh = loaded.decoder_layers[0].moe.mesh
            out_scales = loaded.decoder_layers[0].multi_head_attention.linear.scales
            results[f"{name}/{'int8' if quantized else 'float32'}"] = {
                "error": relative_error(logits, reference["logits"]),
                "argmax_equal": bool((logits.argmax(-1) == reference["logits"].argmax(-1)).all()),
                "gate_shard": list(experts.linear.w.get_value().addressable_shards[0].data.shape),
                "down_shard": list(experts.linear_1.w.get_value().addressable_shards[0].data.shape),
                "out_scales_shard": None if out_scales is None else
                list(out_scales.get_value().addressable_shards[0].data.shape),
                "devices": len(experts.linear.w.get_value().sharding.device_set),
                "moe_knows_mesh": moe_mesh is mesh,
            }
            if quantized and name in KERNEL_MESHES:  # 4 tokens: the decode path, Pallas kernel (interpreted)
                loaded.set_attributes(int8_kernel=True)
                logits = np.asarray(logits_of(*nnx.split(loaded), reference["tokens"][:, :2]))
                results[f"{name}/int8/kernel"] = relative_error(logits, reference["logits"][:, :2])
                loaded.set_attributes(int8_kernel=None)
            if name == "2x4" and quantized:
                results["2x4/int8/greedy"] = generate(loaded, reference["tokens"][0], len(reference["greedy"])).tolist()
    # One decode step on a 1x4 mesh: how many collectives the compiled program runs.
    mesh = make_mesh(model=4, devices=jax.devices()[:4])
    graphdef, state = nnx.split(load_checkpoint(FIXTURE, config, dtype=jnp.float32, quantized=True, mesh=mesh))
    hlo = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)).lower(
        state, sharding.shard_tokens(reference["tokens"][:1, :1], mesh)).compile().as_text()
    collective = r"= \S+ (all-reduce|all-gather|reduce-scatter|all-to-all)(-start)?\("
    results["collectives_1x4"] = len(re.findall(collective, hlo))
    # HF safetensors onto a mesh: the same arrays, laid out the same way, as from the release files.
    import tempfile

    from grok_mini.hf import release_to_hf
    from grok_mini.load import load_hf

    mesh = make_mesh(data=2, model=4)
    with tempfile.TemporaryDirectory() as folder:
        release_to_hf(FIXTURE, config, folder, dtype=jnp.float32)
        from_hf = nnx.to_flat_state(nnx.state(load_hf(folder, dtype=jnp.float32, mesh=mesh), nnx.Param))
    from_release = dict(nnx.to_flat_state(nnx.state(load_checkpoint(FIXTURE, config, dtype=jnp.float32, mesh=mesh),
                                                    nnx.Param)))
    results["hf_on_mesh_equal"] = all(
        np.array_equal(np.asarray(v.get_value()), np.asarray(from_release[path].get_value()))
        and v.get_value().sharding == from_release[path].get_value().sharding for path, v in from_hf)
    try:
        load_checkpoint(FIXTURE, config, mesh=make_mesh(model=3, devices=jax.devices()[:3]))
        results["impossible"] = "loaded"
    except MeshError as error:
        results["impossible"] = str(error)
    return results


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    # Cheaper CPU code generation: compiling ~16 sharded programs dominates this test's time.
    flags = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-m", "tests.test_sharding"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("weights", ["float32", "int8"])
@pytest.mark.parametrize("mesh", list(MESHES))
def test_official_logits_on_every_mesh(eight_devices, mesh, weights):
    """float32 activations: dequantised and int8-on-device weights both within the float32 bound."""
    result = eight_devices[f"{mesh}/{weights}"]
    assert result["error"] < F32_BOUND, result
    assert result["argmax_equal"], result
    data, expert, model = MESHES[mesh]
    assert result["gate_shard"] == [8 // expert, 128, 176 // model]  # [E, D, F] split as the rules say
    assert result["down_shard"] == [8 // expert, 176 // model, 128]
    assert result["devices"] == data * expert * model
    assert result["moe_knows_mesh"] is (result["devices"] > 1)  # to run the Pallas kernel per device
    if weights == "int8":
        assert result["out_scales_shard"] == [8 // model, 128]  # each device holds its rows' block scales


@pytest.mark.parametrize("mesh", KERNEL_MESHES)
def test_decode_kernel_on_every_kind_of_mesh(eight_devices, mesh):
    """The MoE's Pallas decode kernel per device (shard_map over expert and model axes), then psum."""
    assert eight_devices[f"{mesh}/int8/kernel"] < F32_BOUND


def test_a_layer_costs_two_all_reduces_on_a_model_axis(eight_devices):
    """The residual stream stays whole along the width: per layer one all-reduce after attention and
    one after the MoE; then one each for the embedding and the logits (4 layers here). Left to jit, the
    width stays split and every norm, the router and the attention input add their own (38 here)."""
    assert eight_devices["collectives_1x4"] <= 2 * 4 + 2


def test_greedy_through_the_kv_cache_on_a_2x4_mesh(eight_devices, reference):
    assert eight_devices["2x4/int8/greedy"] == reference["greedy"].tolist()


def test_hf_safetensors_load_onto_a_mesh_like_the_release_files(eight_devices):
    assert eight_devices["hf_on_mesh_equal"]


def test_loading_on_a_mesh_the_model_cannot_split_is_refused(eight_devices):
    assert "mesh model=3 does not divide num_q_heads=16" in eight_devices["impossible"]


# ---- two processes (jax.distributed), 4 devices each: one model split 8 ways across them --------------

def _process_worker(process_id: int, port: int) -> dict:
    """One of two processes: load the fixture on a model=8 mesh spanning both, run it (logits and
    greedy generation), and report which slices of layer 0's expert down projection it asked for."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    from grok_mini import load_checkpoint
    from tests.conftest import relative_error

    config = GrokConfig.from_json(FIXTURE / "config.json")
    reference = dict(np.load(FIXTURE / "reference.npz"))
    from grok_mini import load

    asked, place = [], load.place

    def recording_place(path, shape, read_slice, mesh=None):
        def read(index):
            if path == ("decoder_layers", 0, "moe", "experts", "linear_1", "w"):
                asked.append([[s.start, s.stop] for s in index])
            return read_slice(index)
        return place(path, shape, read, mesh)

    load.place = recording_place
    mesh = make_mesh(model=8)
    model = load_checkpoint(FIXTURE, config, dtype=jnp.float32, quantized=True, mesh=mesh)
    graphdef, state = nnx.split(model)
    tokens = reference["tokens"]
    tokens = jax.make_array_from_callback(tokens.shape, jax.sharding.NamedSharding(mesh, P()), lambda i: tokens[i])
    logits_of = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens),
                        out_shardings=jax.sharding.NamedSharding(mesh, P()))
    logits = np.asarray(logits_of(state, tokens).addressable_data(0))
    from grok_mini import generate

    greedy = generate(model, reference["tokens"][0], len(reference["greedy"])).tolist()
    return {"error": relative_error(logits, reference["logits"]), "asked": asked, "greedy": greedy,
            "local_devices": len(jax.local_devices()), "devices": len(jax.devices())}


def test_two_processes_each_read_only_their_own_slices_and_agree_with_the_official_model(reference):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu")
    runs = [subprocess.Popen([sys.executable, "-m", "tests.test_sharding", "--process", str(i), str(port)], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-4000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    for i, result in enumerate(results):
        assert (result["local_devices"], result["devices"]) == (4, 8)
        assert result["error"] < F32_BOUND, result
        assert result["greedy"] == reference["greedy"].tolist()  # generate() as is, across two processes
        # linear_1 [E=8, F=176, D=128] is split by rows over model=8: 22 rows a device, and process i
        # drives devices 4i … 4i+3, so it asked for rows 88i … 88i+87 and nothing else.
        rows = sorted(tuple(index[1]) for index in result["asked"])
        assert rows == [(88 * i + 22 * k, 88 * i + 22 * (k + 1)) for k in range(4)], rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--process"]:
        print(json.dumps(_process_worker(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        print(json.dumps(_worker()))
