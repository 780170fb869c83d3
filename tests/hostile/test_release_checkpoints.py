"""Broken and hostile release checkpoints, the first round: foreign globals, missing, truncated and mismatched files."""

import os
import pickle
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from grok_mini import CheckpointError, load_checkpoint
from grok_mini.checkpoint import _pickle_release, read_tensor
from grok_mini.quant import QuantizedWeight8bit
from tests.conftest import FIXTURE


class Evil:
    """Unpickling this would call `function(*args)`."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("make_payload, global_name", [
    (lambda marker: Evil(os.system, f"touch {marker}"), "posix.system"),
    (lambda marker: Evil(eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"),
    (lambda marker: Evil(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
    (lambda marker: Evil(shutil.rmtree, str(marker)), "shutil.rmtree"),
])
def test_hostile_global_is_refused_and_nothing_runs(checkpoint, fixture_config, tmp_path, make_payload, global_name):
    marker = tmp_path / "pwned"
    target = checkpoint / "ckpt-0" / "tensor00005_000"
    target.write_bytes(pickle.dumps(make_payload(marker)))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(checkpoint, fixture_config, dtype=jnp.float32)
    assert str(target) in str(error.value) and global_name in str(error.value)
    assert not marker.exists()


def test_hostile_global_nested_inside_a_quantized_weight(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "tensor00000_000"
    path.write_bytes(_pickle_release(QuantizedWeight8bit(weight=Evil(os.system, f"touch {marker}"),
                                                         scales=np.ones((1, 2), np.float32))))
    with pytest.raises(CheckpointError, match="posix.system"):
        read_tensor(path)
    assert not marker.exists()


def test_missing_ckpt0(tmp_path, fixture_config):
    with pytest.raises(CheckpointError, match="no ckpt-0/ folder"):
        load_checkpoint(tmp_path, fixture_config)
    with pytest.raises(CheckpointError, match="not ckpt-0 itself"):
        load_checkpoint(FIXTURE / "ckpt-0", fixture_config)


def test_missing_and_extra_files(checkpoint, fixture_config):
    (checkpoint / "ckpt-0" / "tensor00049_000").unlink()
    with pytest.raises(CheckpointError, match=r"1 of 50 tensor files missing \(first: tensor00049_000\)"):
        load_checkpoint(checkpoint, fixture_config)
    shutil.copy(checkpoint / "ckpt-0" / "tensor00048_000", checkpoint / "ckpt-0" / "tensor00049_000")
    shutil.copy(checkpoint / "ckpt-0" / "tensor00048_000", checkpoint / "ckpt-0" / "tensor00050_000")
    with pytest.raises(CheckpointError, match="tensor00050_000.*num_layers=4"):
        load_checkpoint(checkpoint, fixture_config)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_truncated_or_corrupted_file(checkpoint, fixture_config, damage):
    target = checkpoint / "ckpt-0" / "tensor00003_000"
    data = target.read_bytes()
    target.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\x13garbage" * 100,
                        "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=f"{target}: not a readable tensor pickle"):
        load_checkpoint(checkpoint, fixture_config)


def test_wrong_shape_names_file_parameter_and_shapes(checkpoint, fixture_config):
    target = checkpoint / "ckpt-0" / "tensor00001_000"  # final norm scale, (128,)
    target.write_bytes(_pickle_release(np.ones(64, np.float32)))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(checkpoint, fixture_config)
    message = str(error.value)
    assert str(target) in message and "language_model/rms_norm/scale" in message
    assert "(128,)" in message and "(64,)" in message


def test_wrong_dtype(checkpoint, fixture_config):
    target = checkpoint / "ckpt-0" / "tensor00001_000"
    target.write_bytes(_pickle_release(np.ones(128, np.float64)))
    with pytest.raises(CheckpointError, match="rms_norm/scale: expected a float32 array, found float64"):
        load_checkpoint(checkpoint, fixture_config)


def test_float_where_int8_expected(checkpoint, fixture_config):
    target = checkpoint / "ckpt-0" / "tensor00002_000"  # layer 0 moe/linear
    target.write_bytes(_pickle_release(np.ones((8, 128, 176), np.float32)))
    with pytest.raises(CheckpointError, match="decoder_layer_0/moe/linear/w: expected a QuantizedWeight8bit"):
        load_checkpoint(checkpoint, fixture_config)


def test_scales_that_do_not_broadcast(checkpoint, fixture_config):
    target = checkpoint / "ckpt-0" / "tensor00003_000"  # layer 0 moe/linear_1: scales (8, 8, 128)
    original = read_tensor(target)
    target.write_bytes(_pickle_release(QuantizedWeight8bit(weight=original.weight, scales=original.scales[:, :3])))
    with pytest.raises(CheckpointError, match=r"moe/linear_1/w: scales do not fit.*\(8, 8, 128\).*\(8, 3, 128\)"):
        load_checkpoint(checkpoint, fixture_config)


def test_config_that_does_not_fit_the_checkpoint(fixture_config):
    wider = type(fixture_config)(**{**fixture_config.to_dict(), "vocab_size": 1024})
    expected = r"in_out_embed/embeddings: expected shape \(1024, 128\), found \(512, 128\)"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(FIXTURE, wider)


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, fixture_config, monkeypatch):
    import grok_mini.checkpoint as checkpoint_module
    from grok_mini import save_checkpoint

    model = load_checkpoint(FIXTURE, fixture_config, dtype=jnp.float32)
    save_checkpoint(model, tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt-0").iterdir()}
    written = []

    def disk_full_after_ten_files(value):
        if len(written) == 10:
            raise OSError(28, "No space left on device")
        written.append(1)
        return _pickle_release(value)

    monkeypatch.setattr(checkpoint_module, "_pickle_release", disk_full_after_ten_files)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(model, tmp_path)
    after = {p.name: p.read_bytes() for p in (tmp_path / "ckpt-0").iterdir()}
    assert after == before  # the old checkpoint, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-0"]  # no staging folder left behind


def test_failed_training_save_leaves_the_previous_orbax_step_intact(tmp_path, monkeypatch):
    import jax
    import orbax.checkpoint as ocp

    from grok_mini.train import TrainConfig, Trainer, latest_checkpoint_step
    from tests.conftest import TINY

    rng = np.random.default_rng(0)
    tokens = rng.integers(1, TINY.vocab_size, 4000), rng.integers(1, TINY.vocab_size, 400)
    fast = TrainConfig(steps=4, batch_size=2, seq_len=16, warmup_steps=1, eval_every=2, eval_windows=2)
    trainer = Trainer(TINY, fast, *tokens).run(2, run_dir=tmp_path, progress=False)
    saved = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(trainer.model)]

    def failing_json_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    trainer.run(3, progress=False)  # the model moves on, then its save fails midway
    monkeypatch.setattr(ocp.args, "JsonSave", failing_json_save)
    with pytest.raises(OSError, match="No space left"):
        trainer.save(tmp_path)
    monkeypatch.undo()
    assert latest_checkpoint_step(tmp_path) == 2
    restored = Trainer.restore(tmp_path, *tokens)
    assert restored.step == 2
    for ours, theirs in zip(jax.tree_util.tree_leaves(restored.model), saved, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), theirs)


@pytest.mark.parametrize("damage", ["hostile", "truncated", "missing"])
def test_cli_reports_a_bad_checkpoint_in_one_line(checkpoint, tmp_path, damage):
    marker = tmp_path / "pwned"
    target = checkpoint / "ckpt-0" / "tensor00005_000"
    if damage == "hostile":
        target.write_bytes(pickle.dumps(Evil(os.system, f"touch {marker}")))
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target.unlink()
    result = subprocess.run(
        [sys.executable, "-m", "grok_mini.cli", "generate", str(checkpoint),
         "--config", str(FIXTURE / "config.json"), "--ids", "1,2"],
        capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grok-mini generate: error:") and "tensor00005_000" in lines[0]
    assert "Traceback" not in result.stderr and not marker.exists()
