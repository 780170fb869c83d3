"""The Grok-1 tokenizer's facts, exact round trips, and the local tokenizer trained with the same recipe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grok_mini.data import embedded_corpus
from grok_mini.tokenizer import (
    USER_DEFINED_PIECES,
    Tokenizer,
    TokenizerError,
    load_grok1_tokenizer,
    load_tokenizer,
    train_tokenizer,
)

# The official tokenizer.model is not shipped with this project; CI finds it beside the repository.
GROK1_TOKENIZER = Path(os.environ.get("GROK1_TOKENIZER",
                                      Path(__file__).parents[2] / "shared/reference/grok1-tokenizer.model"))
needs_grok1 = pytest.mark.skipif(not GROK1_TOKENIZER.is_file(),
                                 reason=f"Grok-1 tokenizer not found at {GROK1_TOKENIZER} (set GROK1_TOKENIZER)")

ROUND_TRIPS = [
    "The answer to life the universe and everything is of course",
    "naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어",
    "emoji: 😀🚀👩‍👩‍👧 and flags 🇫🇷",
    "def f(x):\n\treturn {'a': x ** 2}  # comment\n",
    "digits 0123456789 and 3.14159e-10, 1,000,000",
    "runs of spaces:  two,   three,        eight; tabs\t\t\tand\n\n\n\nnewlines",
    " leading space and trailing space ",
    "",
    "\x00 control \x7f bytes \r\n",
]


@pytest.fixture(scope="module")
def grok1() -> Tokenizer:
    return load_grok1_tokenizer(GROK1_TOKENIZER)


@pytest.fixture(scope="module")
def toy_tokenizer() -> Tokenizer:
    train_text, _ = embedded_corpus().split()
    return train_tokenizer(train_text.splitlines(), 2048)


@needs_grok1
def test_grok1_vocabulary_and_special_ids(grok1):
    assert grok1.vocab_size == 131_072 == 2**17
    assert (grok1.pad_id, grok1.bos_id, grok1.eos_id, grok1.unk_id) == (0, 1, 2, 3)
    assert [grok1.id_to_piece(i) for i in range(4)] == ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    assert [grok1.id_to_piece(i) for i in range(4, 69)] == list(USER_DEFINED_PIECES)
    assert grok1.id_to_piece(69) == "<0x00>" and grok1.id_to_piece(324) == "<0xFF>"


@needs_grok1
def test_grok1_encodes_the_official_prompt(grok1):
    ids = grok1.encode("The answer to life the universe and everything is of course")
    assert ids == [422, 3033, 356, 1180, 333, 9072, 360, 2175, 391, 359, 1805]
    assert grok1.encode("x", bos=True, eos=True) == [1, *grok1.encode("x"), 2]


@needs_grok1
@pytest.mark.parametrize("text", ROUND_TRIPS)
def test_grok1_round_trip_is_exact(grok1, text):
    assert grok1.decode(grok1.encode(text)) == text


@needs_grok1
def test_grok1_splits_digits_and_falls_back_to_bytes(grok1):
    assert grok1.pieces("2024") == ["▁", "2", "0", "2", "4"]
    # A character without a piece becomes its UTF-8 bytes, never [UNK].
    assert grok1.pieces("🧬") == ["▁", "<0xF0>", "<0x9F>", "<0xA7>", "<0xAC>"]
    assert grok1.unk_id not in grok1.encode("🧬 \ue000 \x00")


def test_trained_tokenizer_follows_the_grok1_recipe(toy_tokenizer):
    tok = toy_tokenizer
    assert tok.vocab_size == 2048
    assert [tok.id_to_piece(i) for i in range(4)] == ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    assert [tok.id_to_piece(i) for i in range(4, 69)] == list(USER_DEFINED_PIECES)  # same ids as Grok-1
    assert tok.id_to_piece(69) == "<0x00>" and tok.id_to_piece(324) == "<0xFF>"
    assert tok.pieces("2024") == ["▁", "2", "0", "2", "4"]
    assert tok.unk_id not in tok.encode("🚀 ½ \x00")
    for text in ROUND_TRIPS:
        assert tok.decode(tok.encode(text)) == text, text


def test_trained_tokenizer_learns_the_corpus_words(toy_tokenizer):
    # Frequent words of the Python Language Reference become single pieces.
    for word in ("▁statement", "▁expression", "▁object"):
        assert word in toy_tokenizer.pieces(word[1:]), word


def test_training_is_deterministic_byte_for_byte():
    lines = embedded_corpus().split()[0].splitlines()[:3000]
    first, second = train_tokenizer(lines, 512), train_tokenizer(list(lines), 512)
    assert first.model_bytes == second.model_bytes
    different = train_tokenizer(lines[:2500], 512)  # the check can fail: other input, other model
    assert different.model_bytes != first.model_bytes


def test_save_and_load_round_trip(tmp_path, toy_tokenizer):
    path = toy_tokenizer.save(tmp_path / "tok.model")
    assert load_tokenizer(path).encode("The if statement") == toy_tokenizer.encode("The if statement")


@pytest.mark.parametrize("vocab_size", [1000, 256, 0, "2048"])
def test_vocab_size_must_be_a_power_of_two(vocab_size):
    with pytest.raises(TokenizerError, match="power of two"):
        train_tokenizer(["some text"], vocab_size)


def test_bad_files_and_ids_give_one_clear_error(tmp_path, toy_tokenizer):
    with pytest.raises(TokenizerError, match="cannot read"):
        load_tokenizer(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        load_tokenizer(tmp_path / "junk.model")
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        toy_tokenizer.decode([5, 2048])


def test_hub_download_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: nothing to fall back on
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(TokenizerError, match=r"xai-org/grok-1.*HF_HUB_OFFLINE.*--tokenizer"):
        load_grok1_tokenizer()
