"""Hostile and broken model configs: GrokConfig.from_json / from_dict and the HF config.json.

Every input gives a valid config or a ConfigError that names the file and the field; nothing else.
"""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grok_mini import ConfigError, GrokConfig, preset
from grok_mini.hf import config_from_hf, hf_config
from grok_mini.memory import require_memory
from tests.conftest import FIXTURE
from tests.hostile.conftest import refused_cleanly, run_isolated

TOY = preset("toy").to_dict()


def write(tmp_path, content: bytes | str, name: str = "config.json"):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def refused(path, *fields: str) -> str:
    """from_json's ConfigError message; asserts it names the file and each of `fields`."""
    with pytest.raises(ConfigError) as caught:
        GrokConfig.from_json(path)
    message = str(caught.value)
    assert str(path) in message
    for field in fields:
        assert field in message, (field, message)
    return message


# ---- the file itself ------------------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe{\x00}", "not UTF-8"),
    ('{"vocab_size": ' + "7" * 5000 + "}", "4300 digits"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"vocab_size": 2048,', "not valid JSON"),
    ("", "not valid JSON"),
])
def test_unreadable_json_names_the_file(tmp_path, content, words):
    assert words in refused(write(tmp_path, content))


@pytest.mark.parametrize("content", ["[1, 2]", '"toy"', "null", "42"])
def test_json_that_is_not_an_object(tmp_path, content):
    assert "expected a JSON object" in refused(write(tmp_path, content))


def test_a_100_mb_config_is_refused_by_its_size(tmp_path):
    path = tmp_path / "config.json"
    with open(path, "wb") as file:
        file.truncate(100 << 20)  # sparse: costs no disk
    assert "104,857,600 bytes" in refused(path)


def test_missing_file_and_folder(tmp_path):
    assert "no such file" in refused(tmp_path / "absent.json")
    assert "a folder" in refused(tmp_path)


@pytest.mark.parametrize("make", [
    lambda path: os.mkfifo(path),
    lambda path: os.symlink(path.parent / "fifo", path) or os.mkfifo(path.parent / "fifo"),  # a link to a FIFO
])
def test_a_fifo_config_is_refused_not_waited_on(tmp_path, make):
    path = tmp_path / "config.json"
    make(path)
    outcome = run_isolated(f"""
        from grok_mini import ConfigError, GrokConfig
        try:
            GrokConfig.from_json({str(path)!r})
        except ConfigError as error:
            assert "FIFO" in str(error) and {str(path)!r} in str(error), error
            print("REFUSED")
    """, timeout=20)
    assert refused_cleanly(outcome), outcome


def test_a_device_is_refused(tmp_path):
    assert "character device" in refused("/dev/zero")


# ---- the values ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("rope_base", "10000"), ("pad_token", "0"), ("pad_token", 0.0), ("eos_token", True),
    ("embedding_multiplier_scale", True), ("attn_output_multiplier", False), ("emb_size", "128"),
    ("vocab_size", 2048.0), ("num_layers", 1_000_000), ("num_layers", -1), ("num_q_heads", 0),
    ("vocab_size", 2**24 + 1), ("sequence_len", 2**40), ("widening_factor", 1e300), ("widening_factor", math.inf),
    ("output_multiplier_scale", None), ("num_experts", [8]), ("num_kv_heads", {"n": 2}),
    ("vocab_size", int("9" * 4000)),  # parses (under Python's 4300 digits) but is no vocabulary
])
def test_wrong_type_or_range_names_the_field(tmp_path, field, value):
    path = write(tmp_path, json.dumps({**TOY, field: value}))
    message = refused(path, field)
    assert len(message) < 400  # a 4,000-digit value is shown cut short


def test_nan_and_infinity_literals(tmp_path):
    path = write(tmp_path, json.dumps(TOY).replace('"widening_factor": 2.0', '"widening_factor": NaN'))
    refused(path, "widening_factor")
    path = write(tmp_path, json.dumps(TOY).replace('"output_multiplier_scale": 0.5773502691896257',
                                                   '"output_multiplier_scale": -Infinity'))
    refused(path, "output_multiplier_scale")


def test_unknown_key_and_derived_value_that_disagrees(tmp_path):
    refused(write(tmp_path, json.dumps({**TOY, "num_layer": 4})), "unknown config keys", "num_layer")
    refused(write(tmp_path, json.dumps({**TOY, "ffn_size": 7})), "ffn_size=7")


def test_grok1_and_the_fixture_still_load(tmp_path):
    assert GrokConfig.from_json(write(tmp_path, json.dumps(preset("grok-1").to_dict()))) == preset("grok-1")
    assert GrokConfig.from_json(FIXTURE / "config.json").num_layers == 4


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from([*TOY, "ffn_size", "rope_base", "max_attn_val", "rms_norm_eps", "x"]),
                               _JSON_VALUES | st.integers(0, 5000), max_size=4))
def test_fuzzed_values_give_a_config_or_a_config_error(changes):
    try:
        config = GrokConfig.from_dict({**TOY, **changes}, source="fuzz.json")
    except ConfigError as error:
        assert str(error).startswith("fuzz.json: ")
    else:
        assert config.ffn_size > 0 and config.num_layers <= 1024


# ---- the HF config.json --------------------------------------------------------------------------

HF_TOY = hf_config(preset("toy"))


def hf_refused(tmp_path, values, *fields: str) -> str:
    path = write(tmp_path, values if isinstance(values, (bytes, str)) else json.dumps(values))
    with pytest.raises(ConfigError) as caught:
        config_from_hf(tmp_path)  # the folder: config.json inside it
    message = str(caught.value)
    assert str(path) in message
    for field in fields:
        assert field in message, (field, message)
    return message


@pytest.mark.parametrize("content", ["[]", '"grok-1"', "3.5"])
def test_hf_config_of_the_wrong_json_type(tmp_path, content):
    hf_refused(tmp_path, content, "must be a JSON object")


@pytest.mark.parametrize("field, value", [
    ("num_attention_heads", 0), ("hidden_size", "6144"), ("hidden_size", 0), ("num_hidden_layers", True),
    ("num_key_value_heads", 3), ("pad_token_id", 0.5), ("max_position_embeddings", 10**30),
    ("embedding_multiplier_scale", "big"), ("head_dim", None), ("vocab_size", -5),
])
def test_hf_config_values_name_the_hf_field(tmp_path, field, value):
    hf_refused(tmp_path, {**HF_TOY, field: value}, field)


def test_hf_config_missing_field_and_unreadable_file(tmp_path):
    values = dict(HF_TOY)
    del values["num_experts"]
    hf_refused(tmp_path, values, "'num_experts'")
    hf_refused(tmp_path, b"\x80not json", "not UTF-8")
    hf_refused(tmp_path, "{" * 50_000, "not valid JSON")


def test_hf_config_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "config.json")
    outcome = run_isolated(f"""
        from grok_mini import ConfigError
        from grok_mini.hf import config_from_hf
        try:
            config_from_hf({str(tmp_path)!r})
        except ConfigError as error:
            assert "FIFO" in str(error), error
            print("REFUSED")
    """)
    assert refused_cleanly(outcome), outcome


# ---- a model larger than the machine ---------------------------------------------------------

def test_a_model_beyond_the_machine_is_refused_from_its_counted_bytes():
    huge = GrokConfig(num_layers=1024)  # Grok-1's width, 16 times its depth: 10 TB of bf16 weights
    with pytest.raises(ConfigError, match=r"the model needs [\d,.]+ GiB, more than the [\d,.]+ GiB"):
        require_memory(huge.weight_bytes("bf16"), "the model")
    require_memory(preset("toy").weight_bytes("fp32"), "the toy")  # fits anywhere


_TOY_TEXT = json.dumps(TOY).encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(_TOY_TEXT) - 1), st.binary(min_size=0, max_size=3)), max_size=4))
def test_mutated_config_files_give_a_config_or_a_config_error(tmp_path, edits):
    data = bytearray(_TOY_TEXT)
    for position, replacement in edits:
        data[position:position + 1] = replacement
    path = tmp_path / "mutated.json"
    path.write_bytes(bytes(data))
    try:
        GrokConfig.from_json(path)
    except ConfigError as error:
        assert str(error).startswith(str(path))


@settings(max_examples=200, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(sorted(HF_TOY)), _JSON_VALUES | st.integers(-3, 5000), max_size=3))
def test_fuzzed_hf_configs_give_a_config_or_a_config_error(changes):
    try:
        config = config_from_hf({**HF_TOY, **changes})
    except ConfigError as error:
        assert str(error).startswith("config.json: ")
    else:
        assert config.num_q_heads % config.num_kv_heads == 0
