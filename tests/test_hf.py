"""HF safetensors import/export with the hpcai-tech Grok-1 names, against the release fixture."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from grok_mini import CheckpointError, GrokConfig, load_checkpoint, preset
from grok_mini.checkpoint import read_tensor, release_layout
from grok_mini.hf import config_from_hf, hf_config, hf_layout, release_to_hf, save_hf
from grok_mini.load import load_hf
from tests.conftest import FIXTURE, TINY


def params(model) -> dict:
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def all_tensors(folder) -> dict[str, np.ndarray]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


@pytest.fixture(scope="module")
def model_f32(fixture_config):
    return load_checkpoint(FIXTURE, fixture_config, dtype=jnp.float32)


@pytest.fixture(scope="module")
def exported(model_f32, tmp_path_factory):
    return save_hf(model_f32, tmp_path_factory.mktemp("hf") / "grok", dtype=jnp.float32)


def test_names_and_shapes_follow_the_hpcai_tech_port(fixture_config, exported):
    """Written out by hand from the facts sheet §7 table, for the fixture (D 128, 16/8 heads of 8, F 176, E 8)."""
    expected = {"model.embed_tokens.weight": (512, 128), "model.norm.scale": (128,)}
    for n in range(4):
        layer = f"model.layers.{n}."
        expected |= {layer + "attn.q_proj.weight": (128, 128), layer + "attn.k_proj.weight": (64, 128),
                     layer + "attn.v_proj.weight": (64, 128), layer + "attn.o_proj.weight": (128, 128),
                     layer + "moe_block.gate.weight": (8, 128)}
        expected |= {layer + norm + ".scale": (128,)
                     for norm in ("pre_attn_norm", "post_attn_norm", "pre_moe_norm", "post_moe_norm")}
        for e in range(8):
            expert = f"{layer}moe_block.experts.{e}."
            expected |= {expert + "linear.weight": (176, 128), expert + "linear_v.weight": (176, 128),
                         expert + "linear_1.weight": (128, 176)}
    assert {t.name: t.shape for t in hf_layout(fixture_config)} == expected
    assert {name: array.shape for name, array in all_tensors(exported).items()} == expected
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "grok-1" and config["intermediate_size"] == 176
    assert config["tie_word_embeddings"] and config["num_experts_per_tok"] == 2


def test_values_are_the_release_tensors_dequantised_and_transposed(fixture_config, exported):
    """Checked against the raw release files with a block dequantisation written out here."""
    files = {t.path: FIXTURE / "ckpt-0" / t.filename for t in release_layout(fixture_config)}
    hf = all_tensors(exported)

    def release(path):
        return read_tensor(files[path])

    def dequantised(value):  # [..., in, out] int8 × scales [..., blocks, out], each block of rows its scale row
        w, s = value.weight.astype(np.float32), value.scales.astype(np.float32)
        blocks, rows = s.shape[-2], w.shape[-2] // s.shape[-2]
        return (w.reshape(*w.shape[:-2], blocks, rows, w.shape[-1]) * s[..., :, None, :]).reshape(w.shape)

    layer = "transformer/decoder_layer_2/"
    q = dequantised(release(layer + "multi_head_attention/query/w"))
    np.testing.assert_array_equal(hf["model.layers.2.attn.q_proj.weight"], q.T)
    out = dequantised(release(layer + "multi_head_attention/linear/w"))
    np.testing.assert_array_equal(hf["model.layers.2.attn.o_proj.weight"], out.T)
    down = dequantised(release(layer + "moe/linear_1/w"))  # [E, F, D], 8 blocks of 22 rows
    np.testing.assert_array_equal(hf["model.layers.2.moe_block.experts.5.linear_1.weight"], down[5].T)
    gate = dequantised(release(layer + "moe/linear/w"))
    np.testing.assert_array_equal(hf["model.layers.2.moe_block.experts.0.linear.weight"], gate[0].T)
    np.testing.assert_array_equal(hf["model.layers.2.moe_block.gate.weight"], release(layer + "router/w").T)
    np.testing.assert_array_equal(hf["model.layers.2.post_moe_norm.scale"], release(layer + "rms_norm_3/scale"))
    np.testing.assert_array_equal(hf["model.embed_tokens.weight"], release("language_model/in_out_embed/embeddings"))


def test_release_to_ours_to_hf_to_ours_gives_identical_parameters(model_f32, exported):
    back = load_hf(exported, dtype=jnp.float32)
    assert back.config == model_f32.config
    before, after = params(model_f32), params(back)
    assert before.keys() == after.keys()
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=str(path))
        assert after[path].dtype == value.dtype


def test_release_converted_file_by_file_equals_the_export_of_the_loaded_model(fixture_config, exported, tmp_path):
    converted = release_to_hf(FIXTURE, fixture_config, tmp_path / "converted", dtype=jnp.float32,
                              max_shard_bytes=200_000)  # forces several shards and an index
    index = json.loads((converted / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    ours, theirs = all_tensors(exported), all_tensors(converted)
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        np.testing.assert_array_equal(theirs[name], value, err_msg=name)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in ours.values())


def test_int8_model_exports_the_same_tensors(fixture_config, exported, tmp_path):
    int8 = load_checkpoint(FIXTURE, fixture_config, dtype=jnp.float32, quantized=True)
    theirs = all_tensors(save_hf(int8, tmp_path / "int8", dtype=jnp.float32))
    for name, value in all_tensors(exported).items():
        np.testing.assert_array_equal(theirs[name], value, err_msg=name)


def test_bfloat16_export_rounds_once(model_f32, tmp_path):
    folder = save_hf(model_f32, tmp_path / "bf16")
    assert json.loads((folder / "config.json").read_text())["torch_dtype"] == "bfloat16"
    back = params(load_hf(folder, dtype=jnp.float32))
    for path, value in params(model_f32).items():
        np.testing.assert_array_equal(back[path], value.astype(jnp.bfloat16).astype(np.float32), err_msg=str(path))


@pytest.mark.parametrize("config", [TINY, preset("grok-1"), GrokConfig.from_json(FIXTURE / "config.json")])
def test_config_round_trip(config):
    assert config_from_hf(hf_config(config)) == config


def test_grok1_config_matches_the_hpcai_tech_values():
    values = hf_config(preset("grok-1"))
    assert (values["hidden_size"], values["intermediate_size"], values["num_hidden_layers"]) == (6144, 32768, 64)
    assert (values["num_attention_heads"], values["num_key_value_heads"], values["vocab_size"]) == (48, 8, 131072)
    values.pop("widening_factor"), values.pop("head_dim")  # hpcai-tech derives both
    assert config_from_hf(values) == preset("grok-1")


# ---- bad input: one clear error ---------------------------------------------------------------------

def _rewrite(folder, change):
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture
def copy_of_export(exported, tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    for file in exported.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def test_missing_tensor_is_named(copy_of_export):
    _rewrite(copy_of_export, lambda t: t.pop("model.layers.3.moe_block.experts.7.linear_v.weight"))
    with pytest.raises(CheckpointError, match=r"1 of 134 tensors missing \(first: model.layers.3.moe_block"
                                              r".experts.7.linear_v.weight\)"):
        load_hf(copy_of_export)


def test_wrong_shape_is_named(copy_of_export):
    def transpose(t):
        t["model.layers.1.attn.o_proj.weight"] = t["model.layers.1.attn.o_proj.weight"][:, :64]
    _rewrite(copy_of_export, transpose)
    with pytest.raises(CheckpointError, match=r"model.layers.1.attn.o_proj.weight is F32 \[128, 64\], expected"):
        load_hf(copy_of_export)


def test_unknown_tensor_and_untied_head_are_refused(copy_of_export):
    _rewrite(copy_of_export, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"] + 1}))
    with pytest.raises(CheckpointError, match="lm_head.weight differs from model.embed_tokens.weight"):
        load_hf(copy_of_export)
    _rewrite(copy_of_export, lambda t: t.update({"model.layers.4.attn.q_proj.weight": np.zeros((128, 128))}))
    with pytest.raises(CheckpointError, match="1 tensors this config does not have .*layers.4.attn.q_proj"):
        load_hf(copy_of_export)


def test_folder_without_safetensors_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="neither model.safetensors nor model.safetensors.index.json"):
        load_hf(tmp_path, TINY)
