"""The HF export on disk: stale and failed exports, FIFOs and links, broken indexes, non-finite weights."""

from __future__ import annotations

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from grok_mini import CheckpointError, Grok, GrokConfig
from grok_mini import hf as hf_module
from grok_mini.hf import INDEX_FILE, release_to_hf, save_hf
from grok_mini.load import load_hf
from tests.conftest import FIXTURE, TINY
from tests.hostile.conftest import refused_cleanly, run_isolated

SHARDED = 20_000  # bytes a shard: TINY in float32 becomes several shards


def model(seed: int) -> Grok:
    return Grok(TINY, dtype=jnp.float32, rngs=nnx.Rngs(seed))


def params(m) -> dict:
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(m, nnx.Param))}


def snapshot(folder) -> dict[str, bytes]:
    """Every file under `folder` (relative path → bytes): what 'nothing changed on disk' compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_model(loaded, expected):
    ours, theirs = params(loaded), params(expected)
    assert ours.keys() == theirs.keys()
    for path in ours:
        np.testing.assert_array_equal(ours[path], theirs[path], err_msg=str(path))


# ---- a new export replaces an old one whole ---------------------------------------------------

@pytest.mark.parametrize("first, second", [(SHARDED, 1 << 30), (1 << 30, SHARDED), (SHARDED, 2 * SHARDED)])
def test_save_over_an_earlier_export_leaves_nothing_of_it(tmp_path, first, second):
    old, new = model(0), model(1)
    target = tmp_path / "export"
    save_hf(old, target, dtype=jnp.float32, max_shard_bytes=first)
    save_hf(new, target, dtype=jnp.float32, max_shard_bytes=second)
    fresh = save_hf(new, tmp_path / "fresh", dtype=jnp.float32, max_shard_bytes=second)
    assert snapshot(target) == snapshot(fresh)  # exactly the files of a first export: no stale shard or index
    assert_same_model(load_hf(target, TINY, dtype=jnp.float32), new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "fresh"]  # no staging folder left


def test_a_save_that_fails_midway_leaves_the_earlier_export_byte_for_byte(tmp_path, monkeypatch):
    target = save_hf(model(0), tmp_path / "export", dtype=jnp.float32, max_shard_bytes=SHARDED)
    before = snapshot(tmp_path)
    written = []

    def disk_full_on_the_third_shard(tensors, filename, metadata=None):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(filename)
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(hf_module, "save_file", disk_full_on_the_third_shard)
    with pytest.raises(OSError, match="No space left"):
        save_hf(model(1), target, dtype=jnp.float32, max_shard_bytes=SHARDED)
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.fixture
def release_copy(tmp_path):
    copy = tmp_path / "release"
    shutil.copytree(FIXTURE, copy)
    return copy


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_failed_release_conversion_leaves_the_earlier_export_byte_for_byte(tmp_path, release_copy, damage):
    config = GrokConfig.from_json(FIXTURE / "config.json")
    target = release_to_hf(release_copy, config, tmp_path / "export", max_shard_bytes=200_000)
    assert len(list(target.glob("model-*.safetensors"))) > 2
    late = release_copy / "ckpt-0" / "tensor00045_000"  # read after several shards were written
    late.write_bytes(late.read_bytes()[:100] if damage == "truncate" else b"\x80\x04junk" * 10)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="tensor00045_000"):
        release_to_hf(release_copy, config, target, max_shard_bytes=200_000)
    assert snapshot(tmp_path) == before  # the earlier export as it was, and no staging folder


def test_an_export_never_deletes_files_that_are_not_an_export(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    (target / "config.json").write_text("{}")
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=r"not part of an HF export \(first: 'notes.txt'\)"):
        save_hf(model(0), target)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(CheckpointError, match="is not a folder"):
        save_hf(model(0), tmp_path / "a_file")
    assert snapshot(tmp_path) == {**before, "a_file": b"x"}


def test_an_export_through_a_link_replaces_what_it_points_to(tmp_path):
    save_hf(model(0), tmp_path / "real", dtype=jnp.float32, max_shard_bytes=SHARDED)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    save_hf(model(1), tmp_path / "link", dtype=jnp.float32)
    assert (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["config.json", "model.safetensors"]
    assert_same_model(load_hf(tmp_path / "link", TINY, dtype=jnp.float32), model(1))


# ---- non-finite weights ---------------------------------------------------------------------------

@pytest.fixture
def single_export(tmp_path):
    return save_hf(model(0), tmp_path / "export", dtype=jnp.float32)


@pytest.mark.parametrize("name, value", [
    ("model.embed_tokens.weight", np.nan),
    ("model.layers.1.moe_block.experts.3.linear_1.weight", np.inf),
    ("model.layers.0.post_moe_norm.scale", -np.inf),
    ("model.layers.0.attn.k_proj.weight", np.nan),
])
def test_non_finite_weights_name_the_file_and_tensor(single_export, name, value):
    file = single_export / "model.safetensors"
    tensors = load_file(str(file))
    tensors[name].flat[-1] = value
    save_file(tensors, str(file), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"{file}: {name} holds NaN or infinite values"):
        load_hf(single_export, TINY, dtype=jnp.float32)
    loaded = load_hf(single_export, TINY, dtype=jnp.float32, check_finite=False)  # the opt-out
    assert not np.isfinite(np.concatenate([np.ravel(v) for v in params(loaded).values()])).all()


def test_non_finite_bfloat16_weights_in_a_sharded_export(tmp_path):
    target = save_hf(model(0), tmp_path / "export", max_shard_bytes=10_000)  # bfloat16 shards
    index = json.loads((target / INDEX_FILE).read_text())["weight_map"]
    name = "model.layers.1.attn.v_proj.weight"
    file = target / index[name]
    tensors = load_file(str(file))
    tensors[name][3, 4] = np.inf
    save_file(tensors, str(file), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"{index[name]}: {name} holds NaN"):
        load_hf(target, TINY)


# ---- the index ------------------------------------------------------------------------------------

@pytest.fixture
def sharded_export(tmp_path):
    return save_hf(model(0), tmp_path / "export", dtype=jnp.float32, max_shard_bytes=SHARDED)


@pytest.mark.parametrize("index, words", [
    ("[]", "not a safetensors index"),
    ('{"weight_map": ["model-00001-of-00002.safetensors"]}', "not a safetensors index"),
    ('{"weight_map": {"model.norm.scale": 7}}', "not a safetensors index"),
    ('{"metadata": {}}', "not a safetensors index"),
    ('{"weight_map": {"model.norm.scale": "../../etc/passwd.safetensors"}}', "not a .safetensors file name"),
    ('{"weight_map": {"model.norm.scale": "/etc/hosts"}}', "not a .safetensors file name"),
    ('{"weight_map": {', "not valid JSON"),
    ("[" * 100_000, "nested too deeply"),
    (b"\xfe\xff", "not UTF-8"),
])
def test_a_broken_index_names_the_index(sharded_export, index, words):
    path = sharded_export / INDEX_FILE
    path.write_bytes(index.encode() if isinstance(index, str) else index)
    with pytest.raises(CheckpointError, match=words) as caught:
        load_hf(sharded_export, TINY)
    assert str(path) in str(caught.value)


def test_a_shard_that_links_to_a_device_is_refused(sharded_export):
    shard = sorted(sharded_export.glob("model-*.safetensors"))[1]
    shard.unlink()
    shard.symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match=rf"{shard}: a safetensors shard must be a regular file, but this is a "
                                              "character device"):
        load_hf(sharded_export, TINY)


@pytest.mark.parametrize("which", ["third shard", INDEX_FILE, "config.json", "model.safetensors"])
def test_fifos_in_an_export_are_refused_not_waited_on(sharded_export, which):
    if which == "third shard":
        which = sorted(p.name for p in sharded_export.glob("model-*.safetensors"))[2]
    if which == "model.safetensors":  # a single-file export whose one file is a FIFO
        for file in sharded_export.glob("model*"):
            file.unlink()
    else:
        (sharded_export / which).unlink()
    os.mkfifo(sharded_export / which)
    outcome = run_isolated(f"""
        from grok_mini import CheckpointError, ConfigError
        from grok_mini.load import load_hf
        try:
            load_hf({str(sharded_export)!r})
        except (CheckpointError, ConfigError) as error:
            assert "FIFO" in str(error) and {which!r} in str(error), error
            print("REFUSED")
    """)
    assert refused_cleanly(outcome), outcome
