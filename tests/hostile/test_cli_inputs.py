"""Hostile command-line values and tokenizer inputs: lone surrogates, huge integers, odd ids, FIFOs, sizes."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from grok_mini import preset
from grok_mini.cli import main
from grok_mini.data import embedded_corpus
from grok_mini.generate import generate
from grok_mini.tokenizer import TokenizerError, load_tokenizer, train_tokenizer
from tests.conftest import FIXTURE
from tests.hostile.conftest import refused_cleanly, run_isolated
from tests.hostile.test_runs import one_line_error

SURROGATE = "caf\udce9"  # what Python makes of the Latin-1 bytes b"caf\xe9" in a UTF-8 command line


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    text = "\n\n".join(text for _, text in embedded_corpus().documents[:12])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    train_tokenizer(text.splitlines(), 512).save(path)  # 512 pieces: the fixture's vocab_size
    return path


def release_generate(*extra) -> int:
    return main(["generate", str(FIXTURE), "--config", str(FIXTURE / "config.json"), "--dtype", "float32",
                 "--max-new-tokens", "2", "--temperature", "0", *extra])


# ---- lone surrogates ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, position", [(SURROGATE, 3), ("\ud800", 0), ("ok \udfff ok", 3)])
def test_lone_surrogates_are_a_tokenizer_error_naming_the_character(tokenizer_file, text, position):
    tokenizer = load_tokenizer(tokenizer_file)
    for method in (tokenizer.encode, tokenizer.pieces):
        with pytest.raises(TokenizerError, match=rf"lone surrogate '\\ud[89a-f][0-9a-f]{{2}}' at character {position}"):
            method(text)


def test_lone_surrogate_prompt_on_the_command_line(tokenizer_file, capsys):
    assert release_generate("--prompt", SURROGATE, "--tokenizer", str(tokenizer_file)) == 1
    one_line_error(capsys, "generate", "lone surrogate", "\\udce9")
    assert main(["tokenize", SURROGATE, "--tokenizer", str(tokenizer_file)]) == 1
    one_line_error(capsys, "tokenize", "lone surrogate")


# ---- integers: huge, negative, not integers ----------------------------------------------------

@pytest.mark.parametrize("option, value, words", [
    ("--seed", str(2**64), "--seed"), ("--seed", "-1", "--seed"), ("--seed", "9" * 5000, "characters)"),
    ("--max-new-tokens", "0", "--max-new-tokens"), ("--max-new-tokens", "1e3", "'1e3'"),
    ("--top-k", "-3", "--top-k"), ("--num-samples", str(2**40), "--num-samples"),
])
def test_out_of_range_integer_options_are_one_line(capsys, option, value, words):
    with pytest.raises(SystemExit) as exit_:
        release_generate("--ids", "5,6", option, value)
    assert exit_.value.code == 1
    line = one_line_error(capsys, "generate", option, words)
    assert len(line) < 300


@pytest.mark.parametrize("ids, words", [
    (str(2**64 - 1), "token id 18446744073709551615 at position 0 is outside the vocabulary [0, 512)"),
    ("5," + str(2**70), "token id 1180591620717411303424 at position 1"),
    ("1e23", "--ids: expected integers"),
    ("7" * 5000, "characters)"),
    ("-1", "token id -1 at position 0"),
])
def test_token_ids_on_the_command_line_are_shown_as_given(capsys, ids, words):
    assert release_generate("--ids", ids) == 1
    line = one_line_error(capsys, "generate", words)
    assert len(line) < 300


@pytest.mark.parametrize("prompt, words", [
    (np.array([2**64 - 1], np.uint64), "token id 18446744073709551615 at position 0"),
    (np.array([5, 2**70], object), "token id 1180591620717411303424 at position 1"),
    ([5, 1e23], "token ids must be integers, got 1e+23 at position 1"),
    (np.array([5.0, 6.0]), "token ids must be integers, got 5.0 at position 0"),
    ([True, 5], "token ids must be integers, got True"),
])
def test_token_ids_in_python_are_shown_as_given(tiny_model, prompt, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("+", r"\+")):
        generate(tiny_model, [prompt], 2)


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1, 2**200, 1.5])
def test_seeds_jax_cannot_take_are_a_value_error(tiny_model, seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        generate(tiny_model, [[5, 6]], 2, seed=seed)


def test_tokenizer_decode_names_bad_ids(tokenizer_file):
    tokenizer = load_tokenizer(tokenizer_file)
    with pytest.raises(TokenizerError, match="id 18446744073709551615 is outside"):
        tokenizer.decode([5, 2**64 - 1])
    with pytest.raises(TokenizerError, match="must be integers"):
        tokenizer.decode([5, 1e23])


# ---- tokenizer files -----------------------------------------------------------------------------

def test_tokenizer_files_that_are_not_regular_or_too_large(tmp_path):
    with pytest.raises(TokenizerError, match="character device"):
        load_tokenizer("/dev/urandom")
    with pytest.raises(TokenizerError, match="a folder"):
        load_tokenizer(tmp_path)
    big = tmp_path / "big.model"
    with open(big, "wb") as file:
        file.truncate(1 << 30)  # sparse
    with pytest.raises(TokenizerError, match=r"1,073,741,824 bytes, more than"):
        load_tokenizer(big)


def test_a_fifo_tokenizer_is_refused_by_the_cli(tmp_path):
    os.mkfifo(tmp_path / "tokenizer.model")
    outcome = run_isolated(f"""
        from grok_mini.cli import main
        code = main(["tokenize", "hello", "--tokenizer", {str(tmp_path)!r}])
        print("REFUSED" if code == 1 else f"exit {{code}}")
    """)
    assert refused_cleanly(outcome), outcome
    assert "tokenizer.model: the tokenizer file must be a regular file, but this is a FIFO" in outcome.stderr


# ---- configs the machine cannot hold, or that no machine should try -------------------------------

@pytest.mark.parametrize("change, words", [
    (dict(num_layers=1024, emb_size=6144, key_size=128, num_q_heads=48, widening_factor=8.0, vocab_size=131072),
     "GiB, more than the"),
    (dict(num_layers=10**6), "num_layers must be a positive integer ≤ 1,024, got 1000000"),
])
def test_generate_refuses_a_model_too_large_before_building_it(tmp_path, capsys, change, words):
    values = {**json.loads((FIXTURE / "config.json").read_text()), **change}
    values.pop("ffn_size")  # derived; it changes with the width
    config = tmp_path / "huge.json"
    config.write_text(json.dumps(values))
    start = time.perf_counter()
    assert main(["generate", str(FIXTURE), "--config", str(config), "--ids", "5"]) == 1
    assert time.perf_counter() - start < 5  # counted, not built
    one_line_error(capsys, "generate", words)


def test_the_toy_and_the_fixture_still_generate(capsys):
    assert release_generate("--ids", "5,6") == 0
    assert len(capsys.readouterr().out.split()) == 2
    assert preset("toy").weight_bytes("fp32") < 1 << 30


@pytest.mark.parametrize("name", ["config.json", "tokenizer.model"])
def test_fifos_beside_a_release_checkpoint_are_refused_not_skipped(tmp_path, name):
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "ckpt-0").symlink_to(FIXTURE / "ckpt-0")
    if name == "tokenizer.model":
        (folder / "config.json").write_bytes((FIXTURE / "config.json").read_bytes())
    os.mkfifo(folder / name)
    outcome = run_isolated(f"""
        from grok_mini.cli import main
        code = main(["generate", {str(folder)!r}, "--prompt", "hi", "--max-new-tokens", "1", "--dtype", "float32"])
        print("REFUSED" if code == 1 else f"exit {{code}}")
    """, env={"HF_HUB_OFFLINE": "1"})
    assert refused_cleanly(outcome), outcome
    assert f"{folder / name}:" in outcome.stderr and "FIFO" in outcome.stderr
