"""The stored trained toy, and the rule by which `scripts/make_trained_toy.py --check` (run by CI) judges a
fresh run of its documented command against it. The fresh run itself takes 2 minutes: CI runs it, these
tests check that the comparison can fail."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from grok_mini.teach import TRAINED_TOY, trained_toy, trained_toy_history

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_trained_toy.py"


@pytest.fixture(scope="module")
def make():
    spec = importlib.util.spec_from_file_location("make_trained_toy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def copy(tmp_path):
    out = tmp_path / "toy"
    shutil.copytree(TRAINED_TOY, out)
    return out


def test_the_stored_toy_is_the_documented_commands_and_trained(make):
    history = trained_toy_history()
    assert history["train_config"] == make.dataclasses.asdict(make.TRAINING)
    assert set(history["versions"]) - {"cpu"} == {"python", "jax", "jaxlib", "flax", "optax"}  # cpu: newer records
    losses = history["history"]["heldout_loss"]
    assert losses[0] > 7.5 and losses[-1] < 3.7  # log 2048 = 7.62 at the start: it learned
    model, tokenizer = trained_toy()
    assert model.config.vocab_size == tokenizer.vocab_size == 2048


def test_a_run_identical_to_the_stored_one_passes_and_one_changed_byte_fails(make, copy):
    made = json.loads((copy / "training.json").read_text())
    rule, problems = make.check(copy, made, TRAINED_TOY)
    assert rule == "byte for byte" and problems == []
    weights = copy / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last float
    weights.write_bytes(bytes(data))
    assert make.check(copy, made, TRAINED_TOY)[1] == ["model/model.safetensors: not the same bytes"]
    made["history"]["loss"][3] += 1e-7
    assert "the training history differs" in make.check(copy, made, TRAINED_TOY)[1]


def test_under_other_versions_the_held_out_losses_must_agree_within_the_tolerance(make, copy):
    made = json.loads((copy / "training.json").read_text())
    made["versions"] = {**made["versions"], "jax": "99.0"}
    weights = copy / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # other versions: other bits, allowed
    rule, problems = make.check(copy, made, TRAINED_TOY)
    assert rule.startswith(f"within {make.HELDOUT_TOLERANCE} nats") and problems == []
    made["history"]["heldout_loss"][-1] += make.HELDOUT_TOLERANCE - 0.01
    assert make.check(copy, made, TRAINED_TOY)[1] == []
    made["history"]["heldout_loss"][-1] += 0.02  # now 0.01 beyond the tolerance
    assert make.check(copy, made, TRAINED_TOY)[1] == [
        f"held-out loss at step 600: {made['history']['heldout_loss'][-1]:.4f}, "
        f"stored {trained_toy_history()['history']['heldout_loss'][-1]:.4f}"]


def test_on_another_processor_the_tolerance_applies(make, copy, tmp_path):
    """The same library versions on another CPU may round differently (XLA compiles for its instruction set):
    byte for byte only where the stored run records this very processor."""
    stored = tmp_path / "stored"
    shutil.copytree(TRAINED_TOY, stored)
    record = json.loads((stored / "training.json").read_text())
    made = json.loads((copy / "training.json").read_text())
    made["versions"] = {**record["versions"], "cpu": "processor B"}
    for recorded_cpu, rule in ((None, "within"), ("processor A", "within"), ("processor B", "byte for byte")):
        versions = {**record["versions"], **({} if recorded_cpu is None else {"cpu": recorded_cpu})}
        (stored / "training.json").write_text(json.dumps({**record, "versions": versions}))
        assert make.check(copy, made, stored)[0].startswith(rule), recorded_cpu
    assert make.versions()["cpu"]  # this machine's processor is recorded
