"""Tokenizer: a SentencePiece model, either Grok-1's own (131,072 pieces) or a small one trained here.

Grok-1's `tokenizer.model` is a SentencePiece BPE model with byte fallback, digits split one by
one, the text left as it is (identity normaliser, runs of spaces kept), a "▁" added before the
first word, and fixed ids: [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3, then 65 user-defined pieces
(runs of newlines, digits, runs of tabs and spaces, <|separator|>, <|mask|>, 20 control
markers) at ids 4-68 and the 256 byte pieces at 69-324. `train_tokenizer` follows the same
recipe, so a toy tokenizer has those same first 325 ids and differs only in the merges it learns.

The official runner never adds BOS; neither does `Tokenizer.encode` unless asked.
"""

from __future__ import annotations

import io
import operator
import os
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from grok_mini.files import read_regular_bytes

__all__ = ["Tokenizer", "TokenizerError", "load_tokenizer", "load_grok1_tokenizer", "train_tokenizer",
           "GROK1_REPO", "GROK1_FILENAME", "USER_DEFINED_PIECES"]

GROK1_REPO = "xai-org/grok-1"  # on the Hugging Face hub
GROK1_FILENAME = "tokenizer.model"

# Grok-1's user-defined pieces, in id order 4-68 (read from its tokenizer.model).
USER_DEFINED_PIECES: tuple[str, ...] = (
    *("\n" * n for n in range(1, 11)),
    *(str(d) for d in range(10)),
    *("\t" * n for n in range(1, 9)),
    *(" " * n for n in range(2, 17)),
    "<|separator|>", "<|mask|>",
    *(f"<|control{n}|>" for n in range(1, 21)),
)


class TokenizerError(ValueError):
    """A tokenizer file that cannot be found, fetched or read, or a bad training request."""


class Tokenizer:
    """A SentencePiece model with the Grok-1 conventions: encode (no BOS by default), decode, pieces."""

    def __init__(self, model: bytes, *, source: str = "tokenizer"):
        self.source = source
        self.model_bytes = bytes(model)  # the serialised model: what `save` writes
        self.processor = spm.SentencePieceProcessor()
        try:
            self.processor.LoadFromSerializedProto(self.model_bytes)
        except (RuntimeError, OSError) as error:
            raise TokenizerError(f"{source}: not a SentencePiece model ({error})") from None

    @property
    def vocab_size(self) -> int:
        return self.processor.vocab_size()

    @property
    def pad_id(self) -> int:
        return self.processor.pad_id()

    @property
    def bos_id(self) -> int:
        return self.processor.bos_id()

    @property
    def eos_id(self) -> int:
        return self.processor.eos_id()

    @property
    def unk_id(self) -> int:
        return self.processor.unk_id()

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """Text → ids. Like the official runner, no BOS unless asked."""
        ids = self.processor.encode(_unicode(text))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """Ids → text; control ids (pad, BOS, EOS) decode to nothing."""
        try:
            ids = [operator.index(i) for i in ids]  # ints and numpy ints; not 2.0, not 1e23
        except TypeError:
            raise TokenizerError(f"{self.source}: token ids must be integers, got {list(ids)[:8]!r}") from None
        if bad := [i for i in ids if not 0 <= i < self.vocab_size]:
            raise TokenizerError(f"{self.source}: id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        return self.processor.decode(ids)

    def pieces(self, text: str) -> list[str]:
        """The pieces `encode` produces for `text` ("▁" marks a space)."""
        return self.processor.encode(_unicode(text), out_type=str)

    def id_to_piece(self, token: int) -> str:
        return self.processor.id_to_piece(int(token))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.model_bytes)
        return path

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r}, vocab_size={self.vocab_size})"


def _unicode(text: str) -> str:
    """`text` if SentencePiece can take it: a str that is valid Unicode (no lone surrogates, which
    Python makes of undecodable bytes in command-line arguments and file names)."""
    if not isinstance(text, str):
        raise TokenizerError(f"expected text (str) to encode, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise TokenizerError(f"the text has a lone surrogate {text[error.start]!r} at character {error.start}: "
                             "it is not valid Unicode (bytes that are not UTF-8?)") from None
    return text


TOKENIZER_MAX_BYTES = 64 << 20  # Grok-1's tokenizer.model is 2.2 MB


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A SentencePiece `.model` file from disk (a regular file of at most TOKENIZER_MAX_BYTES)."""
    path = Path(path)
    try:
        model = read_regular_bytes(path, "the tokenizer file", TOKENIZER_MAX_BYTES)
    except OSError as error:
        raise TokenizerError(str(error)) from None
    return Tokenizer(model, source=str(path))


def load_grok1_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """Grok-1's tokenizer: from `path` if given, else `tokenizer.model` of xai-org/grok-1 on the hub.

    The hub download is cached by huggingface_hub (~2.2 MB). Offline (no network, or HF_HUB_OFFLINE=1)
    and not cached, it fails with a message saying where to put the file instead.
    """
    if path is not None:
        return load_tokenizer(path)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        local = hf_hub_download(GROK1_REPO, GROK1_FILENAME)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        if offline:
            why = "HF_HUB_OFFLINE is set"
        elif isinstance(error, HfHubHTTPError) and not isinstance(error, LocalEntryNotFoundError):
            why = f"the hub answered: {str(error).splitlines()[0]}"
        else:
            why = "the hub is unreachable and the file is not cached"
        raise TokenizerError(
            f"cannot fetch {GROK1_FILENAME} from the Hugging Face hub repo {GROK1_REPO} ({why}); "
            f"download it once where you have a connection, or pass its local path "
            f"(e.g. --tokenizer path/to/{GROK1_FILENAME})") from None
    return load_tokenizer(local)


def train_tokenizer(lines: Iterable[str], vocab_size: int = 2048) -> Tokenizer:
    """Train a SentencePiece BPE tokenizer with Grok-1's recipe on `lines` (one sentence a line).

    Same input, same model, byte for byte: one thread and no input shuffling (SentencePiece's
    only sources of nondeterminism). vocab_size must be a power of two (Grok-1: 2**17); it
    needs at least 512 for the 325 fixed pieces plus something to learn.
    """
    if not isinstance(vocab_size, int) or vocab_size < 512 or vocab_size & (vocab_size - 1):
        raise TokenizerError(f"vocab_size must be a power of two of at least 512 (Grok-1: 131072), "
                             f"got {vocab_size!r}")
    sentences = [line for line in lines if line.strip()]
    if not sentences:
        raise TokenizerError("cannot train a tokenizer on empty text")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model,
            model_type="bpe", vocab_size=vocab_size,
            byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
            max_sentencepiece_length=16, character_coverage=0.9995, max_sentence_length=4192,
            split_by_unicode_script=True, split_by_whitespace=True, split_by_number=True,
            pad_id=0, bos_id=1, eos_id=2, unk_id=3,
            pad_piece="[PAD]", bos_piece="[BOS]", eos_piece="[EOS]", unk_piece="[UNK]", unk_surface="[UNK]",
            user_defined_symbols=list(USER_DEFINED_PIECES),
            num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
            minloglevel=2,  # quiet
        )
    except RuntimeError as error:
        raise TokenizerError(f"SentencePiece training failed: {error}") from None
    return Tokenizer(model.getvalue(), source=f"trained BPE ({vocab_size} pieces)")
