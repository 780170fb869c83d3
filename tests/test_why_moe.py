"""Notebook 12 (why a mixture of experts): its computing helpers against independent computations, the
three arms' parameter counts, the stored runs against the arms, and the two prediction checkers."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
from pathlib import Path

import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from flax import nnx
from matplotlib.figure import Figure

import grok_mini
from grok_mini.explore import SWEEP_TRAINING, read_results
from grok_mini.teach import exercises
from grok_mini.teach import why_moe as wm
from grok_mini.teach.exercises import ExerciseFailed
from grok_mini.teach.exercises import why_moe as checks

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "notebooks" / "data" / "12_why_moe"
GROK = grok_mini.preset("grok-1")
TOY = grok_mini.preset("toy")


def _configs():
    return {arm.name: arm.configs(TOY, SWEEP_TRAINING, 0)[0] for arm in wm.arms(TOY)}


def _counted(config) -> int:
    """Parameters of the model's abstract state (shapes only), independent of GrokConfig.param_counts."""
    abstract = grok_mini.Grok.abstract(config, dtype=jnp.float32)
    return sum(math.prod(v.shape) for _, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param)))


# ---- the three arms --------------------------------------------------------------------------------

@pytest.mark.parametrize("multiple", [1, 2, 3, 8])
@pytest.mark.parametrize("name", ["toy", "small", "grok-1"])
def test_dense_widening_gives_that_many_expert_widths(name, multiple):
    base = grok_mini.preset(name)
    widening = wm.dense_widening(base, multiple)
    dense = dataclasses.replace(base, widening_factor=widening, num_experts=1, num_selected_experts=1)
    assert dense.ffn_size == multiple * base.ffn_size


def test_the_arms_match_in_active_and_total_parameters_as_claimed():
    configs = _configs()
    moe, active, total = configs["moe"], configs["dense-active"], configs["dense-total"]
    assert (moe.num_experts, moe.num_selected_experts) == (8, 2)
    assert (active.num_experts, total.num_experts) == (1, 1)
    assert (active.ffn_size, total.ffn_size) == (2 * moe.ffn_size, 8 * moe.ffn_size) == (352, 1408)
    # the expert weights match exactly: the two chosen experts' against the wide one, all eight against the widest
    d, f, L = moe.emb_size, moe.ffn_size, moe.num_layers
    assert active.param_counts()["experts"] == L * 2 * 3 * d * f == moe.param_counts()["experts"] // 4
    assert total.param_counts()["experts"] == L * 8 * 3 * d * f == moe.param_counts()["experts"]
    # everything else is the same but the router, which has one column an expert
    router_gap = L * d * (moe.num_experts - 1)
    assert moe.num_active_params - active.num_active_params == router_gap == 3584
    assert moe.num_params - total.num_params == router_gap
    for config in configs.values():  # the counts agree with the model's own shapes
        assert _counted(config) == config.num_params
    assert (moe.num_params, moe.num_active_params) == (2_627_712, 1_005_696)
    assert (active.num_params, total.num_params) == (1_002_112, 2_624_128)


# ---- compute ---------------------------------------------------------------------------------------

def test_official_flops_count_every_copy_through_every_expert():
    """Against the FLOPs XLA counts in the two formulations' expert matmuls on a toy-sized layer."""
    import jax

    from grok_mini import moe as moe_module

    config = TOY
    model = grok_mini.Grok(config, dtype=jnp.float32, rngs=nnx.Rngs(0))
    experts = model.decoder_layers[0].moe.experts
    n, k, e = 16, config.num_selected_experts, config.num_experts
    x = jnp.ones((n, config.emb_size), jnp.float32)
    ids = jnp.asarray(np.stack([np.arange(n) % e, (np.arange(n) + 1) % e], -1), jnp.int32)
    gates = jnp.full((n, k), 0.5, jnp.float32)

    def flops(fn):
        graph, state = nnx.split(experts)
        compiled = jax.jit(lambda s: fn(nnx.merge(graph, s), x, gates, ids)).lower(state).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return cost["flops"]

    official = flops(moe_module.official_dense_moe)
    one_expert = 2 * 3 * config.emb_size * config.ffn_size  # per token copy
    matmuls = n * k * e * one_expert  # every copy through every expert
    assert matmuls <= official < 1.1 * matmuls  # plus the one-hot selects and the activation
    per_layer = (wm.official_flops_per_token(config) - config.flops_per_token()) / config.num_layers
    assert per_layer == (k * e - k) * one_expert


def test_official_flops_of_grok1_match_the_fact_sheet():
    per_layer = 2 * 3 * GROK.emb_size * GROK.ffn_size  # one expert, one token, one layer
    assert round(16 * per_layer / 1e9, 1) == 19.3 and round(2 * per_layer / 1e9, 1) == 2.4  # §2.4
    ours = 2 * per_layer * GROK.num_layers  # the experts' FLOPs of top-2, all layers
    ratio = (wm.official_flops_per_token(GROK) - GROK.flops_per_token() + ours) / ours
    assert ratio == pytest.approx(8)


def test_training_flops_is_three_forwards_a_token():
    assert wm.training_flops(1e6, [0, 10], 512).tolist() == [0.0, 3 * 1e6 * 512 * 10]


# ---- decode bytes ----------------------------------------------------------------------------------

def test_expert_bytes_from_the_release_format():
    d, f, blocks = GROK.emb_size, GROK.ffn_size, 8
    # two column-parallel matrices (a bf16 scale per output column), one row-parallel (8 blocks of scales)
    by_hand = 2 * (d * f + 2 * f) + (f * d + 2 * blocks * d)
    assert wm.expert_bytes(GROK) == by_hand == 604_209_152
    toy = wm.expert_bytes(TOY)
    assert toy == 2 * (128 * 176 + 2 * 176) + (176 * 128 + 2 * 8 * 128)


def test_decode_bytes_against_the_fact_sheet_and_the_benchmark():
    layer = 4_922_163_200  # fact sheet §4.4: the int8 bytes of one layer, all experts
    embedding, norm = 3_221_225_472, 24_576
    assert wm.decode_bytes_per_token(GROK, experts=8) == 64 * layer + embedding + norm == GROK.weight_bytes("int8")
    eight = dataclasses.replace(GROK, num_layers=8)
    used = wm.decode_bytes_per_token(eight)
    assert used == 8 * (layer - 6 * 604_209_152) + embedding + norm
    assert abs(used / 1e9 - 13.61) < 0.05  # benchmarks/RESULTS.md, one H200, 8 layers (its count adds the KV cache)
    assert abs(wm.decode_bytes_per_token(eight, experts=8) / 1e9 - 42.61) < 0.05


def test_expected_experts_read_against_enumeration_and_simulation():
    for e, k, batch in [(4, 2, 1), (4, 2, 2), (5, 2, 3), (8, 2, 2), (6, 3, 2)]:
        config = dataclasses.replace(TOY, num_experts=e, num_selected_experts=k)
        choices = list(itertools.combinations(range(e), k))
        exact = np.mean([len(set().union(*pick)) for pick in itertools.product(choices, repeat=batch)])
        assert wm.expected_experts_read(config, batch) == pytest.approx(exact, abs=1e-12)
    rng = np.random.default_rng(0)
    for batch in (1, 4, 8, 32):
        picks = np.argsort(rng.random((20_000, batch, 8)), -1)[..., :2]  # two distinct experts a token
        read = np.array([len(np.unique(p)) for p in picks])
        assert wm.expected_experts_read(GROK, batch) == pytest.approx(read.mean(), abs=0.03)


# ---- the stored runs -------------------------------------------------------------------------------

def test_the_stored_runs_are_the_arms_three_seeds_each_and_small():
    runs = [json.loads(p.read_text()) for p in sorted((DATA / "runs").glob("*.json"))]
    configs = _configs()
    assert sorted((r["experiment"], r["seed"]) for r in runs) == sorted(
        itertools.product(wm.ARM_NAMES, (0, 1, 2)))
    for run in runs:
        model = configs[run["experiment"]]
        assert run["model"] == json.loads(json.dumps(model.to_dict()))
        assert (run["total_params"], run["active_params"]) == (model.num_params, model.num_active_params)
        assert run["train"] == json.loads(json.dumps(dataclasses.asdict(
            dataclasses.replace(SWEEP_TRAINING, seed=run["seed"]))))
    assert sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) < 1_000_000


def test_final_table_and_band_against_the_runs():
    loaded = [json.loads(p.read_text()) for p in (DATA / "runs").glob("*.json")]
    runs = {(r["experiment"], r["seed"]): r for r in loaded}
    table = {row["arm"]: row for row in wm.final_table(DATA)}
    band = wm.arm_band(DATA)
    assert list(table) == list(band) == list(wm.ARM_NAMES)
    for name, row in table.items():
        finals = [runs[name, s]["history"]["heldout_loss"][-1] for s in (0, 1, 2)]
        assert row["losses"] == pytest.approx(finals) and row["mean"] == pytest.approx(np.mean(finals))
        assert (row["min"], row["max"]) == (min(finals), max(finals)) and row["seeds"] == 3
        b = band[name]
        assert b["mean"][-1] == pytest.approx(row["mean"]) and b["step"][-1] == SWEEP_TRAINING.steps
        tokens = SWEEP_TRAINING.batch_size * SWEEP_TRAINING.seq_len
        assert b["flops"][-1] == pytest.approx(3 * row["flops_per_token"] * tokens * SWEEP_TRAINING.steps)
    assert len(read_results(DATA)) > 0


def test_the_script_documents_and_builds_the_same_arms():
    spec = importlib.util.spec_from_file_location("make_why_moe_runs", ROOT / "scripts" / "make_why_moe_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OUT == DATA and module.SEEDS == (0, 1, 2)
    for name in wm.ARM_NAMES:
        assert name in module.__doc__


def test_the_plots_draw():
    import matplotlib.pyplot as plt

    for figure in (wm.plot_params_and_flops(GROK), wm.plot_arms(DATA), wm.plot_decode_bytes(GROK, 4250e9)):
        assert isinstance(figure, Figure) and figure.axes[0].get_title()
        plt.close(figure)


# ---- the prediction checkers -----------------------------------------------------------------------

def _top1_truth() -> float:
    counts = GROK.param_counts()
    shared = GROK.num_params - counts["experts"]
    return GROK.num_params / (shared + counts["experts"] / 8)


CASES = {
    "top1": (checks.check_top1_ratio, _top1_truth(), [
        (8.0, "experts' ratio alone"), (GROK.num_params / GROK.num_active_params, "own top-2 ratio"),
        (2 * GROK.num_params / GROK.num_active_params, "doubles the top-2 ratio"), (4.0, "experts' ratio of top-2")]),
    "batch": (checks.check_batch_experts, 8 * (1 - 0.75 ** checks.BATCH), [
        (2, "batch 1's count"), (8, "every expert for certain"), (16, "token copies"),
        (8 * (1 - (7 / 8) ** 8), "one choice")]),
}


@pytest.mark.parametrize("case", CASES)
def test_prediction_checker_convention(case, capsys, monkeypatch):
    checker, truth, wrong = CASES[case]
    assert checker(None) is False
    out = capsys.readouterr().out
    assert "not attempted yet" in out and "Hint" not in out
    assert checker(truth) is True
    assert capsys.readouterr().out.startswith("✓ ")
    assert len(wrong) >= 3
    for value, words in wrong:
        monkeypatch.setattr(exercises, "_attempts", {})
        with pytest.raises(ExerciseFailed, match=words):
            checker(value)
    monkeypatch.setattr(exercises, "_attempts", {})
    with pytest.raises(ExerciseFailed, match="too large"):
        checker(truth + 20)
    with pytest.raises(ExerciseFailed, match="should be a number"):
        checker("seven")


def test_the_checkers_do_not_print_the_truth_before_a_right_answer(capsys, monkeypatch):
    for checker, truth, wrong in CASES.values():
        monkeypatch.setattr(exercises, "_attempts", {})
        for value, _ in wrong:
            with pytest.raises(ExerciseFailed) as error:
                checker(value)
            assert f"{truth:.2f}" not in str(error.value) and f"{truth:.3f}" not in str(error.value)


def test_hints_are_three_words_only():
    assert set(checks.HINTS) == {"the top-1 parameter ratio", "the experts a batch reads"}
    for hints in checks.HINTS.values():
        assert len(hints) == 3
        for hint in hints:
            assert not any(mark in hint for mark in ("(", "=", "*", "`", "_", "[", "**"))


def test_the_moe_arm_is_the_labs_grok1_run():
    """Same config, tokenizer, schedule and seeds as the lab's stored grok-1 runs: the same histories."""
    lab = ROOT / "notebooks" / "data" / "lab_sweep" / "runs"
    for seed in (0, 1):
        ours = json.loads((DATA / "runs" / f"moe-seed{seed}.json").read_text())["history"]["heldout_loss"]
        theirs = json.loads((lab / f"grok-1-seed{seed}.json").read_text())["history"]["heldout_loss"]
        assert ours == pytest.approx(theirs, abs=1e-4)
