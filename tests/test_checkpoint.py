"""The release checkpoint layout: file order, int8 block scales, save/load round trips."""

import os
import pickle

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_mini import Grok, GrokConfig, load_checkpoint, preset, save_checkpoint
from grok_mini.checkpoint import CheckpointError, _pickle_release, read_tensor, release_layout
from grok_mini.quant import QuantizedWeight8bit, dequantize, quantize
from tests.conftest import FIXTURE, TINY


def params(model):
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_layout_matches_the_fixture_manifest(fixture_config):
    import json
    manifest = json.loads((FIXTURE / "manifest.json").read_text())
    layout = release_layout(fixture_config)
    assert [t.path for t in layout] == [m["path"] for m in manifest]
    assert [list(t.shape) for t in layout] == [m["shape"] for m in manifest]


def test_grok1_file_numbers_from_the_facts_sheet():
    # §4.2: 770 files; first file of layer L = 2 + 12·rank(L) in string order.
    layout = release_layout(preset("grok-1"))
    assert len(layout) == 770
    first = {t.param[1]: t.index for t in reversed(layout) if t.param[0] == "decoder_layers"}
    assert (first[10], first[2], first[63]) == (26, 146, 722)
    assert layout[769].path == "transformer/decoder_layer_9/router/w"
    assert layout[0].path == "language_model/in_out_embed/embeddings"


def test_layer_10_is_read_from_the_files_the_release_puts_it_in(tmp_path):
    config = GrokConfig(**{**TINY.to_dict(), "num_layers": 12})
    model = Grok(config, dtype=jnp.float32, rngs=nnx.Rngs(1))
    save_checkpoint(model, tmp_path)
    # Layers in string order 0, 1, 10, 11, 2, ...: layer 10 owns files 26..37, layer 2 files 50..61.
    gate_10 = read_tensor(tmp_path / "ckpt-0" / "tensor00026_000")
    ours_10 = np.asarray(model.decoder_layers[10].moe.experts.linear.w.get_value())
    np.testing.assert_allclose(dequantize(gate_10.weight, gate_10.scales), ours_10, atol=np.abs(ours_10).max() / 100)
    router_2 = read_tensor(tmp_path / "ckpt-0" / "tensor00061_000")
    np.testing.assert_array_equal(router_2, np.asarray(model.decoder_layers[2].moe.router.w.get_value()))
    # And loading puts them back where they belong.
    loaded = load_checkpoint(tmp_path, config, dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(loaded.decoder_layers[10].moe.experts.linear.w.get_value()),
                                  dequantize(gate_10.weight, gate_10.scales))
    assert not np.allclose(np.asarray(loaded.decoder_layers[2].moe.experts.linear.w.get_value()),
                           dequantize(gate_10.weight, gate_10.scales))


def test_fixture_save_load_round_trips_exactly(tmp_path, fixture_config):
    original = load_checkpoint(FIXTURE, fixture_config, dtype=jnp.float32)
    save_checkpoint(original, tmp_path)
    again = load_checkpoint(tmp_path, fixture_config, dtype=jnp.float32)
    a, b = params(original), params(again)
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=str(path))


def test_random_model_round_trips_after_quantisation(tmp_path):
    save_checkpoint(Grok(TINY, dtype=jnp.float32, rngs=nnx.Rngs(3)), tmp_path / "a")
    first = load_checkpoint(tmp_path / "a", TINY, dtype=jnp.float32)
    save_checkpoint(first, tmp_path / "b")
    second = load_checkpoint(tmp_path / "b", TINY, dtype=jnp.float32)
    for path, value in params(first).items():
        np.testing.assert_array_equal(value, params(second)[path], err_msg=str(path))


def test_block_scales_apply_per_block_of_input_rows():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 3)).astype(np.float32)
    w[8:] *= 100  # the second half of the rows needs a much larger scale
    q = quantize(w, blocks=8)
    assert q.weight.dtype == np.int8 and q.scales.shape == (8, 3)
    assert float(q.scales[7, 0]) > 50 * float(q.scales[0, 0])
    per_row_scale = np.repeat(q.scales.astype(np.float32), 2, axis=0)  # [16, 3]
    # rounding error stays within its own block's scale
    assert np.all(np.abs(dequantize(q.weight, q.scales) - w) <= 0.75 * per_row_scale)
    by_hand = q.weight.astype(np.float32).reshape(8, 2, 3) * q.scales.astype(np.float32)[:, None, :]
    np.testing.assert_array_equal(dequantize(q.weight, q.scales), by_hand.reshape(16, 3))


def test_fixture_files_are_what_the_manifest_says():
    value = read_tensor(FIXTURE / "ckpt-0" / "tensor00003_000")  # layer 0 moe/linear_1, 8 blocks
    assert isinstance(value, QuantizedWeight8bit)
    assert value.weight.shape == (8, 176, 128) and value.scales.shape == (8, 8, 128)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_loaded_dtypes(fixture_config, dtype):
    model = load_checkpoint(FIXTURE, fixture_config, dtype=dtype)
    assert model.decoder_layers[0].moe.experts.linear.w.get_value().dtype == dtype
    assert model.decoder_layers[0].moe.router.w.get_value().dtype == jnp.float32
    assert model.in_out_embed.get_value().dtype == jnp.float32


def test_quantized_load_keeps_int8_and_matches_dequantised(fixture_config, reference):
    from tests.conftest import forward, relative_error

    int8 = load_checkpoint(FIXTURE, fixture_config, dtype=jnp.float32, quantized=True)
    gate = int8.decoder_layers[0].moe.experts.linear
    assert gate.w.get_value().dtype == jnp.int8 and gate.scales.get_value().shape == (8, 1, 176)
    assert int8.decoder_layers[0].multi_head_attention.linear.scales.get_value().shape == (8, 128)
    logits = forward(int8, reference["tokens"])
    assert relative_error(logits, reference["logits"]) < 1e-4  # float32: block-wise = dequantise-first


def test_embedding_held_in_bfloat16_gives_the_same_logits_and_tokens(fixture_config, reference):
    """The model only uses its embedding cast to the activation dtype, so holding it so changes nothing:
    logits equal bit for bit (the host's cast at load and the device's at each use round alike)."""
    from grok_mini.generate import generate
    from grok_mini.load import quantize_model, shard_model
    from grok_mini.sharding import make_mesh

    as_released = load_checkpoint(FIXTURE, fixture_config, dtype=jnp.bfloat16, quantized=True)
    held = load_checkpoint(FIXTURE, fixture_config, dtype=jnp.bfloat16, quantized=True, embedding_dtype=jnp.bfloat16)
    assert as_released.in_out_embed.get_value().dtype == jnp.float32
    assert held.in_out_embed.get_value().dtype == jnp.bfloat16
    tokens = reference["tokens"]
    np.testing.assert_array_equal(np.asarray(held(tokens), np.float32), np.asarray(as_released(tokens), np.float32))
    np.testing.assert_array_equal(generate(held, tokens[:, :5], 6), generate(as_released, tokens[:, :5], 6))
    # Rebuilt models keep the dtype they were given.
    assert quantize_model(held).in_out_embed.get_value().dtype == jnp.bfloat16
    assert shard_model(held, make_mesh()).in_out_embed.get_value().dtype == jnp.bfloat16


def test_quantized_model_saves_its_int8_exactly(tmp_path, fixture_config):
    int8 = load_checkpoint(FIXTURE, fixture_config, dtype=jnp.float32, quantized=True)
    save_checkpoint(int8, tmp_path)
    for name in ("tensor00003_000", "tensor00006_000"):  # moe linear_1 and attention linear: 8 blocks
        original, written = read_tensor(FIXTURE / "ckpt-0" / name), read_tensor(tmp_path / "ckpt-0" / name)
        np.testing.assert_array_equal(original.weight, written.weight)
        np.testing.assert_array_equal(original.scales, written.scales)


# ---- memory-mapped reading --------------------------------------------------------------------------

def test_mapped_reader_reads_the_fixture_like_the_plain_reader():
    for path in sorted((FIXTURE / "ckpt-0").iterdir())[:14]:
        plain, mapped = read_tensor(path), read_tensor(path, mapped=True)
        assert isinstance(mapped, QuantizedWeight8bit) == isinstance(plain, QuantizedWeight8bit)
        if isinstance(plain, QuantizedWeight8bit):
            np.testing.assert_array_equal(mapped.weight, plain.weight)
            np.testing.assert_array_equal(mapped.scales, plain.scales)
        else:
            np.testing.assert_array_equal(mapped, plain)


def test_large_arrays_are_mapped_not_read(tmp_path):
    rng = np.random.default_rng(0)
    value = QuantizedWeight8bit(weight=rng.integers(-127, 128, (4, 256, 512), dtype=np.int8),
                                scales=rng.random((4, 8, 512), np.float32).astype(jnp.bfloat16))
    (tmp_path / "q").write_bytes(_pickle_release(value))
    (tmp_path / "f").write_bytes(pickle.dumps(np.asfortranarray(rng.random((300, 200), np.float32)), protocol=4))
    mapped = read_tensor(tmp_path / "q", mapped=True)
    assert isinstance(mapped.weight, np.memmap) and not isinstance(mapped.scales, np.memmap)  # 512 KiB vs 16 KiB
    np.testing.assert_array_equal(mapped.weight, value.weight)
    np.testing.assert_array_equal(mapped.scales, value.scales)
    fortran = read_tensor(tmp_path / "f", mapped=True)
    assert isinstance(fortran, np.memmap)
    np.testing.assert_array_equal(fortran, read_tensor(tmp_path / "f"))


def test_mapped_reader_refuses_what_the_plain_reader_refuses(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    (tmp_path / "evil").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="refusing global 'posix.system'"):
        read_tensor(mapped=True, path=tmp_path / "evil")
    data = pickle.dumps(np.zeros((512, 512), np.float32), protocol=4)
    (tmp_path / "cut").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut: not a readable tensor pickle"):
        read_tensor(mapped=True, path=tmp_path / "cut")
    (tmp_path / "dict").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="holds a dict"):
        read_tensor(mapped=True, path=tmp_path / "dict")
