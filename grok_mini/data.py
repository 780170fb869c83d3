"""Text to train on: an embedded default corpus, a held-out split, and batches of token windows.

The default corpus is **the Python Language Reference as it ships with Python itself**: the
module `pydoc_data.topics` of the standard library holds the text that `help("if")`,
`help("class")` ... show, 79 topics (on Python 3.11.7: 464,970 characters, about 135,000 tokens
with the toy tokenizer). It is English technical prose with grammar snippets and code, generated
from CPython's Doc/reference sources, and it is on every machine that has Python: no download.
Licence: the Python Software Foundation License (the CPython documentation's licence), see
https://docs.python.org/3/license.html. Its exact text varies a little between Python versions.

Any text file or folder (every `*.txt`, `*.md`, `*.rst` file under it, in sorted order) can replace it.

Held-out split (deterministic): every document is cut into paragraphs at blank lines, numbered
in order across the corpus, and every 10th paragraph (numbers 9, 19, 29, ...) is held out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

__all__ = ["Corpus", "embedded_corpus", "read_corpus", "load_corpus", "split_paragraphs", "sample_windows",
           "heldout_windows", "TEXT_SUFFIXES", "HELDOUT_EVERY"]

TEXT_SUFFIXES = (".txt", ".md", ".rst")
HELDOUT_EVERY = 10  # one paragraph in ten is held out


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Named documents in a fixed order, and where they came from."""

    source: str
    documents: tuple[tuple[str, str], ...]  # (name, text)

    @property
    def num_chars(self) -> int:
        return sum(len(text) for _, text in self.documents)

    def split(self, every: int = HELDOUT_EVERY) -> tuple[str, str]:
        """(training text, held-out text): paragraph i of the corpus is held out when i % every == every - 1."""
        train, heldout = [], []
        for i, paragraph in enumerate(p for _, text in self.documents for p in split_paragraphs(text)):
            (heldout if i % every == every - 1 else train).append(paragraph)
        return "\n\n".join(train), "\n\n".join(heldout)


def split_paragraphs(text: str) -> list[str]:
    """Blocks of text separated by blank lines, each stripped of surrounding blank lines."""
    paragraphs, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line.rstrip())
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    if current:
        paragraphs.append("\n".join(current))
    return paragraphs


def embedded_corpus() -> Corpus:
    """The Python Language Reference topics from the standard library (`pydoc_data.topics`)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some Linux distributions split the docs out of the stdlib package
        raise OSError("this Python has no pydoc_data module (the embedded corpus); install your "
                      "distribution's full Python standard library or pass --corpus PATH") from None
    return Corpus("Python Language Reference (pydoc_data.topics, Python standard library, PSF License)",
                  tuple((name, topics[name]) for name in sorted(topics)))


def read_corpus(path: str | Path) -> Corpus:
    """A text file, or a folder of text files (`TEXT_SUFFIXES`, found recursively, in sorted order)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise OSError(f"{path}: no {'/'.join(TEXT_SUFFIXES)} files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise OSError(f"{path}: no such file or folder")
    documents = []
    for file in files:
        try:
            documents.append((str(file.relative_to(path)) if path.is_dir() else file.name,
                              file.read_text(encoding="utf-8")))
        except UnicodeDecodeError as error:
            raise OSError(f"{file}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not any(text.strip() for _, text in documents):
        raise OSError(f"{path}: the corpus is empty")
    return Corpus(str(path), tuple(documents))


def load_corpus(path: str | Path | None = None) -> Corpus:
    """`read_corpus(path)`, or the embedded corpus when path is None."""
    return embedded_corpus() if path is None else read_corpus(path)


def sample_windows(tokens: np.ndarray, batch_size: int, length: int, *, seed: int, step: int) -> np.ndarray:
    """The training batch of `step`: [batch_size, length + 1] windows at random offsets of `tokens`.

    Depends only on (seed, step), not on earlier calls, so a run resumed at step s reads exactly
    the batches an uninterrupted run reads from step s on. Inputs are window[:, :-1], targets window[:, 1:].
    """
    if len(tokens) < length + 1:
        raise ValueError(f"the training text has {len(tokens)} tokens, fewer than one window of "
                         f"{length + 1}; use a larger corpus or a shorter --seq-len")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(tokens) - length, size=batch_size)
    return np.stack([tokens[s:s + length + 1] for s in starts]).astype(np.int32)


def heldout_windows(tokens: np.ndarray, length: int, max_windows: int) -> np.ndarray:
    """Up to `max_windows` non-overlapping [length + 1] windows from the start of the held-out tokens."""
    count = min(max_windows, (len(tokens) - 1) // length)
    if count < 1:
        raise ValueError(f"the held-out text has {len(tokens)} tokens, fewer than one window of {length + 1}")
    return np.stack([tokens[i * length:i * length + length + 1] for i in range(count)]).astype(np.int32)
