"""Training run folders and corpora that are damaged or hostile: `train --resume`, `generate RUN`, `demo`.

One small run is trained once for the module; each test damages a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from grok_mini.cli import main
from grok_mini.data import read_corpus
from tests.hostile.conftest import refused_cleanly, run_isolated
from tests.test_train import cli_inputs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(a run folder trained to step 2 of 40, the training flags, the config file, the corpus)."""
    folder = tmp_path_factory.mktemp("trained")
    config_file, corpus, fast = cli_inputs(folder)
    run = folder / "run"
    assert main(["train", "--config", str(config_file), *fast, "--until", "2", "--corpus", str(corpus),
                 "--out", str(run), "--no-progress"]) == 0
    return run, fast, config_file, corpus


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    return copy


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, command: str, *words: str) -> str:
    """The CLI's stderr: one line `grok-mini COMMAND: error: ...` holding every one of `words`."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"grok-mini {command}: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def resume(run, *extra) -> int:
    return main(["train", "--resume", "--out", str(run), "--no-progress", *extra])


def generate(run) -> int:
    return main(["generate", str(run), "--prompt", "The", "--max-new-tokens", "2", "--temperature", "0"])


# ---- damaged run metadata: train --resume and generate RUN ---------------------------------------

def _edit_json(path, change):
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


DAMAGE = {
    "train_config truncated": ("train_config.json", lambda p: p.write_text(p.read_text()[:30]), "not valid JSON"),
    "train_config empty": ("train_config.json", lambda p: p.write_text(""), "not valid JSON"),
    "train_config lacks seed": ("train_config.json", lambda p: _edit_json(p, lambda v: v.pop("seed")),
                                "missing training settings ['seed']"),
    "train_config unknown key": ("train_config.json", lambda p: _edit_json(p, lambda v: v.update(lr=1)),
                                 "unknown training settings ['lr']"),
    "train_config string steps": ("train_config.json", lambda p: _edit_json(p, lambda v: v.update(steps="40")),
                                  "steps must be an integer"),
    "train_config huge seed": ("train_config.json", lambda p: _edit_json(p, lambda v: v.update(seed=2**70)),
                               "seed must be an integer"),
    "train_config a list": ("train_config.json", lambda p: p.write_text("[1]"), "expected a JSON object"),
    "config truncated": ("config.json", lambda p: p.write_text(p.read_text()[:-5]), "not valid JSON"),
    "config unknown key": ("config.json", lambda p: _edit_json(p, lambda v: v.update(n_layers=2)),
                           "unknown config keys ['n_layers']"),
    "config lacks a key": ("config.json", lambda p: _edit_json(p, lambda v: v.pop("pad_token")),
                           "missing config keys ['pad_token']"),
    "config bool pad": ("config.json", lambda p: _edit_json(p, lambda v: v.update(pad_token=True)), "pad_token"),
    "config million layers": ("config.json", lambda p: _edit_json(p, lambda v: v.update(num_layers=10**6)),
                              "num_layers"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_run_metadata_is_one_line_naming_the_file(run, capsys, case):
    name, damage, words = DAMAGE[case]
    damage(run / name)
    before = snapshot(run)
    assert resume(run) == 1
    one_line_error(capsys, "train", str(run / name), words)
    assert generate(run) == 1
    one_line_error(capsys, "generate", str(run / name), words)
    assert snapshot(run) == before  # neither command wrote anything


def test_damaged_corpus_record_and_tokenizer(run, capsys):
    (run / "corpus.json").write_text(json.dumps({"path": 5}))
    assert resume(run) == 1
    one_line_error(capsys, "train", "corpus.json", '"path"')
    (run / "corpus.json").write_text("{")
    assert resume(run) == 1
    one_line_error(capsys, "train", "corpus.json", "not valid JSON")
    (run / "tokenizer.model").write_bytes(b"\x00" * 10)
    assert generate(run) == 1
    one_line_error(capsys, "generate", "tokenizer.model", "not a SentencePiece model")


def test_a_damaged_orbax_item_names_the_checkpoint(run, capsys):
    step = run / "checkpoints" / "2"
    for file in (step / "meta").rglob("*"):
        if file.is_file():
            file.write_bytes(file.read_bytes()[:3])
    assert resume(run) == 1
    one_line_error(capsys, "train", str(step))


@pytest.mark.parametrize("name", ["config.json", "train_config.json", "tokenizer.model"])
def test_fifos_in_a_run_folder_are_refused_not_waited_on(run, name):
    (run / name).unlink()
    os.mkfifo(run / name)
    outcome = run_isolated(f"""
        from grok_mini.cli import main
        code = main(["generate", {str(run)!r}, "--prompt", "The", "--max-new-tokens", "1"])
        print("REFUSED" if code == 1 else f"exit {{code}}")
    """)
    assert refused_cleanly(outcome), outcome
    assert "FIFO" in outcome.stderr and name in outcome.stderr


# ---- --until and resuming ------------------------------------------------------------------------

def test_until_zero_and_until_at_the_current_step(run, capsys, trained):
    _, fast, config_file, corpus = trained
    before = snapshot(run)
    with pytest.raises(SystemExit) as exit_:  # argparse, one line, status 1
        main(["train", "--config", str(config_file), *fast, "--until", "0", "--out", str(run / "new")])
    assert exit_.value.code == 1
    one_line_error(capsys, "train", "--until", "'0'")
    assert resume(run, "--until", "2") == 1
    one_line_error(capsys, "train", "already at step 2")
    assert {k: v for k, v in snapshot(run).items() if k != "corpus.json"} == \
        {k: v for k, v in before.items() if k != "corpus.json"}


# ---- demo / train over an earlier run: nothing goes before the new inputs are checked ------------

@pytest.mark.parametrize("bad", ["missing corpus", "NUL corpus", "empty corpus", "bad config", "huge config"])
def test_demo_and_train_keep_the_earlier_run_when_the_new_inputs_are_bad(run, capsys, trained, tmp_path, bad):
    _, fast, config_file, corpus = trained
    if bad == "missing corpus":
        corpus = tmp_path / "no-such-corpus"
    elif bad == "NUL corpus":
        corpus = tmp_path / "nul.txt"
        corpus.write_bytes(b"\x00" * 4096)
    elif bad == "empty corpus":
        corpus = tmp_path / "empty.txt"
        corpus.write_text("\n\n  \n")
    else:
        values = json.loads(config_file.read_text())
        values.update(pad_token=1.5) if bad == "bad config" else values.update(
            vocab_size=131072, emb_size=6144, key_size=128, num_q_heads=48, num_kv_heads=8, num_layers=1024,
            widening_factor=8.0, sequence_len=8192)  # Grok-1 at 16 times its depth: 40 TB to train
        config_file = tmp_path / "bad.json"
        config_file.write_text(json.dumps(values))
    before = snapshot(run)
    common = ["--config", str(config_file), "--corpus", str(corpus), "--out", str(run), *fast, "--no-progress"]
    assert main(["demo", *common, "--max-new-tokens", "2"]) == 1
    line = one_line_error(capsys, "demo")
    assert str(corpus) in line or str(config_file) in line or str(run) in line, line
    assert snapshot(run) == before


def test_corpus_files_that_are_not_text(tmp_path):
    (tmp_path / "nul.txt").write_bytes(b"text\x00\x00")
    with pytest.raises(OSError, match=r"nul.txt: has a NUL byte at character 4"):
        read_corpus(tmp_path / "nul.txt")
    os.mkfifo(tmp_path / "pipe.txt")
    outcome = run_isolated(f"""
        from grok_mini.data import read_corpus
        try:
            read_corpus({str(tmp_path / "pipe.txt")!r})
        except OSError as error:
            assert "FIFO" in str(error), error
            print("REFUSED")
    """)
    assert refused_cleanly(outcome), outcome
