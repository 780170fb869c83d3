"""Notebook 11 (the experts): its two prediction checkers, its helpers against plain float64 numpy, its plots,
and its stored outputs (the stubs say only "not attempted", no answer is printed before its exercise)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from flax import nnx

from grok_mini import moe
from grok_mini.config import preset
from grok_mini.teach import experts as draw
from grok_mini.teach.exercises import ExerciseFailed
from grok_mini.teach.exercises import experts as checks

matplotlib.use("Agg")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "11_experts.ipynb"


@pytest.fixture(autouse=True)
def _first_attempts(monkeypatch):
    """Each test starts as a fresh kernel does: no wrong attempts counted yet."""
    from grok_mini.teach import exercises

    monkeypatch.setattr(exercises, "_attempts", {})


@functools.cache
def _layer0_inputs():
    """The trained toy's layer-0 experts and their inputs on the notebook's held-out tokens (rms_norm_2's output)."""
    from grok_mini.data import embedded_corpus
    from grok_mini.teach import trained_toy

    model, tokenizer = trained_toy()
    config = model.config
    _, heldout = embedded_corpus().split()
    tokens = jnp.asarray(np.array(tokenizer.encode(heldout)[: 8 * 128]).reshape(8, 128))

    @nnx.jit
    def first_moe_input(model, tokens):
        layer = model.decoder_layers[0]
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        h = model.in_out_embed[...][tokens] * config.embedding_multiplier_scale
        attended, _ = layer.multi_head_attention(layer.rms_norm(h), positions, tokens != config.pad_token)
        return layer.rms_norm_2(h + layer.rms_norm_1(attended)).reshape(-1, config.emb_size)

    return model.decoder_layers[0].moe.experts, first_moe_input(model, tokens)


def _numpy_silu_change(experts, x) -> float:
    """The relative change of every expert's output, SiLU for tanh-GELU, written independently in float64."""
    x = np.asarray(x, np.float64)
    w, v, w1 = (np.asarray(m.kernel(), np.float64) for m in (experts.linear, experts.linear_v, experts.linear_1))
    official, ported = [], []
    for e in range(w.shape[0]):
        z, value = x @ w[e], x @ v[e]
        gelu = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
        silu = z * (1 / (1 + np.exp(-z)))
        official.append((gelu * value) @ w1[e])
        ported.append((silu * value) @ w1[e])
    official, ported = np.stack(official), np.stack(ported)
    return float(np.sqrt(np.sum((ported - official) ** 2)) / np.sqrt(np.sum(official**2)))


# ---- exercise 1: multiply-adds of one Grok-1 expert -------------------------------------------------------

D, F = 6144, 32768  # Grok-1's width and expert width (reference/grok1-facts.md §1)
MULTIPLY_ADDS = 3 * D * F / 1e6  # millions
WRONG_MULTIPLY_ADDS = [("twice the truth", 2 * MULTIPLY_ADDS), ("counts two matrices", 2 * D * F / 1e6),
                       ("eight times the width", 3 * D * 8 * D / 1e6), ("one matrix only", D * F / 1e6),
                       ("all eight experts", 8 * MULTIPLY_ADDS)]


def test_grok1_expert_width_is_the_official_one():
    grok = preset("grok-1")
    assert (grok.emb_size, grok.ffn_size) == (D, F)
    assert checks.expert_multiply_adds_millions() == pytest.approx(603.979776)


def test_multiply_adds_accepts_the_truth_and_says_why(capsys):
    assert checks.check_expert_multiply_adds(MULTIPLY_ADDS) is True
    out = capsys.readouterr().out
    assert out.startswith("✓ expert_multiply_adds: passed (604: three matrices")
    assert checks.check_expert_multiply_adds(600) is True  # a rounded prediction is fine


@pytest.mark.parametrize(("words", "wrong"), WRONG_MULTIPLY_ADDS, ids=[w for w, _ in WRONG_MULTIPLY_ADDS])
def test_multiply_adds_names_each_listed_mistake(words, wrong):
    with pytest.raises(ExerciseFailed, match=words) as error:
        checks.check_expert_multiply_adds(wrong)
    assert "Hint" not in str(error.value) and f"{MULTIPLY_ADDS:.4g}" not in str(error.value)


def test_multiply_adds_stub_is_not_attempted_and_gives_nothing_away(capsys):
    assert checks.check_expert_multiply_adds(None) is False
    assert capsys.readouterr().out == ("· expert_multiply_adds: not attempted yet. Set `multiply_adds` to your "
                                       "prediction and run the cell again.\n")


def test_multiply_adds_unknown_wrong_value_says_too_large_or_small_and_hints_come_one_by_one():
    with pytest.raises(ExerciseFailed, match="too large") as first:
        checks.check_expert_multiply_adds(1e6)
    assert "Hint" not in str(first.value)
    with pytest.raises(ExerciseFailed, match="too small") as second:
        checks.check_expert_multiply_adds(1)
    assert checks.HINTS["expert_multiply_adds"][0] in str(second.value)
    assert checks.HINTS["expert_multiply_adds"][1] not in str(second.value)
    with pytest.raises(ExerciseFailed, match="should be a number"):
        checks.check_expert_multiply_adds("a lot")


# ---- exercise 2: the SiLU porting bug on the trained toy's layer 0 ---------------------------------------

WRONG_CHANGES = [("approximation of GELU", 0.0), ("conformance fixture", 0.26), ("half the output", 0.5),
                 ("as large as the output", 1.0)]


def test_silu_change_helper_matches_plain_numpy_and_the_package_functions():
    experts, x = _layer0_inputs()
    truth = _numpy_silu_change(experts, x)
    assert checks.silu_expert_change(experts, x) == pytest.approx(truth, rel=1e-9)

    @nnx.jit
    def package_change(experts, x):  # the package's activations and dense dispatch, float32
        def all_experts(act):
            gate = jnp.einsum("nd,edf->enf", x, experts.linear.kernel())
            value = jnp.einsum("nd,edf->enf", x, experts.linear_v.kernel())
            return jnp.einsum("enf,efd->end", act(gate) * value, experts.linear_1.kernel())

        official = all_experts(moe.gelu_tanh)
        return jnp.linalg.norm(all_experts(moe.silu) - official) / jnp.linalg.norm(official)

    assert float(package_change(experts, x)) == pytest.approx(truth, rel=1e-4)
    assert 0.03 < truth < 0.08  # a few per cent: the size the mistakes and the notebook's prose assume


def test_silu_change_accepts_the_truth_and_an_order_of_magnitude(capsys):
    experts, x = _layer0_inputs()
    truth = _numpy_silu_change(experts, x)
    for prediction in (truth, 1.4 * truth, 0.6 * truth):
        assert checks.check_silu_expert_change(prediction, experts, x) is True
        assert capsys.readouterr().out.startswith("✓ silu_expert_change: passed")


@pytest.mark.parametrize(("words", "wrong"), WRONG_CHANGES, ids=[w for w, _ in WRONG_CHANGES])
def test_silu_change_names_each_listed_mistake(words, wrong):
    experts, x = _layer0_inputs()
    with pytest.raises(ExerciseFailed, match=words) as error:
        checks.check_silu_expert_change(wrong, experts, x)
    assert "Hint" not in str(error.value)


def test_silu_change_stub_is_not_attempted(capsys):
    experts, x = _layer0_inputs()
    assert checks.check_silu_expert_change(None, experts, x) is False
    assert capsys.readouterr().out == ("· silu_expert_change: not attempted yet. Set `change` to your prediction "
                                       "and run the cell again.\n")


def test_silu_change_far_off_says_too_large():
    experts, x = _layer0_inputs()
    with pytest.raises(ExerciseFailed, match="too large"):
        checks.check_silu_expert_change(5.0, experts, x)


# ---- hints, the helper, the plots, the stored notebook ---------------------------------------------------

def _looks_like_code(text: str) -> bool:
    """tests/test_exercises.py's rule: calls, assignments, indexing, operators and library names."""
    return bool(re.search(r"\w\(|\w\[|\bnp\.|\bjnp\.|\bjax\.|\*\*|//|==|>=|<=| = |lambda|\.astype|\.sum|\.mean",
                          text))


def test_three_hints_in_words_per_exercise_and_nothing_to_refuse():
    assert set(checks.HINTS) == {"expert_multiply_adds", "silu_expert_change"} == set(checks.REFUSE)
    for name, hints in checks.HINTS.items():
        assert len(hints) == 3, name
        assert [hint for hint in hints if _looks_like_code(hint)] == [], name
        assert checks.REFUSE[name] == ()


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 4, 6)])
def test_relative_change_matches_plain_float64_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    reference = rng.standard_normal(shape).astype(np.float32)
    changed = reference + 1e-3 * rng.standard_normal(shape).astype(np.float32)
    a, b = changed.astype(np.float64), reference.astype(np.float64)
    expected = np.sqrt(np.sum((a - b) ** 2)) / np.sqrt(np.sum(b**2))
    assert draw.relative_change(changed, reference) == pytest.approx(expected, rel=1e-12)
    assert draw.relative_change(jnp.asarray(changed), jnp.asarray(reference)) == pytest.approx(expected, rel=1e-12)
    assert draw.relative_change(reference, reference) == 0.0


def test_plots_return_figures_with_their_titles():
    from matplotlib.figure import Figure

    grok = preset("grok-1")
    z = np.linspace(-4, 4, 81)
    curves = {"GELU (tanh form)": np.asarray(moe.gelu_tanh(jnp.asarray(z))), "SiLU": np.asarray(jax.nn.silu(z))}
    figures = [
        draw.plot_shares(grok.param_counts(), {"experts": 9, "attention": 1}, title="shares"),
        draw.plot_activations(z, curves, title="curves"),
        draw.plot_preactivations(np.random.default_rng(0).standard_normal(500), z,
                                 {"SiLU": np.abs(curves["SiLU"] - curves["GELU (tanh form)"])}, title="pre"),
    ]
    for figure, title in zip(figures, ("shares", "curves", "pre"), strict=True):
        assert isinstance(figure, Figure)
        shown = [ax.get_title() for ax in figure.axes] + [figure._suptitle.get_text() if figure._suptitle else ""]
        assert title in shown
    matplotlib.pyplot.close("all")


def _stored_outputs(cell) -> str:
    return "".join(o.get("text", "") + "".join(str(v) for k, v in o.get("data", {}).items() if k.startswith("text"))
                   for o in cell.get("outputs", []))


def test_the_stored_notebook_holds_stubs_and_prints_no_answer_before_its_exercise():
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cells = notebook.cells
    answers = [i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("solution")]
    assert [cells[i].metadata["nbgrader"]["grade_id"] for i in answers] == ["expert_multiply_adds",
                                                                          "silu_expert_change"]
    for i in answers:
        answer, checker = cells[i].metadata["nbgrader"], cells[i + 1].metadata["nbgrader"]
        assert answer == {"solution": True, "grade": False, "locked": False, "grade_id": answer["grade_id"],
                          "schema_version": 3}
        assert checker == {"solution": False, "grade": True, "locked": True, "points": 1,
                           "grade_id": answer["grade_id"] + "_check", "schema_version": 3}
        assert re.fullmatch(r"\w+ = None  # .*", cells[i].source)
        printed = "".join(o.get("text", "") for o in cells[i + 1].outputs if o.output_type == "stream")
        assert re.fullmatch(rf"· {answer['grade_id']}: not attempted yet\. [^\n]*\n", printed)
    before = "".join(_stored_outputs(c) for c in cells[:answers[0]] if c.cell_type == "code")
    experts, x = _layer0_inputs()
    silu = _numpy_silu_change(experts, x)
    for shown in (f"{MULTIPLY_ADDS:.4g}", f"{MULTIPLY_ADDS:.3g}", "603,979,776", f"{silu:.2g}", f"{silu:.3f}"):
        assert shown not in before, shown
