import json

import pytest

from grok_mini import PRESETS, ConfigError, GrokConfig, preset
from tests.conftest import FIXTURE


def test_grok1_counts_match_the_release():
    config = preset("grok-1")
    assert config.ffn_size == 32_768
    assert config.num_params == 315_684_820_992
    assert config.num_active_params == 83_756_587_008
    # Data bytes of the 770 release files (facts sheet §4.4) and 256 KiB of bf16 KV cache per token.
    assert config.weight_bytes("int8") == 318_239_694_848
    assert config.weight_bytes("bf16") == 2 * 315_684_820_992
    assert config.kv_cache_bytes_per_token() == 256 * 1024


def test_counts_agree_with_the_facts_sheet_per_layer_table():
    counts = preset("grok-1").param_counts()
    assert counts["attention"] == 64 * 88_080_384
    assert counts["experts"] == 64 * 4_831_838_208
    assert counts["embedding"] == 805_306_368


def test_ffn_formula_rounds_up_to_multiple_of_8():
    # int(2.0 * 128) * 2 // 3 = 170 → 176, as in the fixture's config.json
    assert GrokConfig(emb_size=128, widening_factor=2.0).ffn_size == 176


def test_from_json_reads_fixture_and_checks_derived_values(tmp_path):
    config = GrokConfig.from_json(FIXTURE / "config.json")
    assert (config.num_layers, config.emb_size, config.ffn_size) == (4, 128, 176)
    values = json.loads((FIXTURE / "config.json").read_text())
    values["ffn_size"] = 170
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps(values))
    with pytest.raises(ConfigError, match="ffn_size=170"):
        GrokConfig.from_json(bad)


@pytest.mark.parametrize("fields, message", [
    (dict(num_q_heads=48, num_kv_heads=7), "not divisible by num_kv_heads"),
    (dict(key_size=127), "must be even"),
    (dict(num_selected_experts=9), "exceeds num_experts"),
    (dict(num_layers=0), "num_layers must be a positive integer"),
    (dict(pad_token=200_000), "must be ids below vocab_size"),
])
def test_invalid_configs_fail_at_construction(fields, message):
    with pytest.raises(ConfigError, match=message):
        GrokConfig(**fields)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'grok-2'.*toy"):
        preset("grok-2")


def test_presets_are_valid_and_toy_is_small():
    assert {"grok-1", "toy", "small"} <= set(PRESETS)
    assert PRESETS["toy"].num_params < PRESETS["small"].num_params < PRESETS["grok-1"].num_params
