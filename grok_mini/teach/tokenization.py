"""Notebook 01, tokenization: the vocabulary layout, pieces of a line, compression.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from grok_mini.teach.style import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, SKY, YELLOW, _figure, _styled

__all__ = ["compression_by_vocab_size", "plot_compression", "plot_tokenized_text", "plot_vocabulary_layout",
           "vocabulary_layout"]


_PIECE_KINDS = {"special": GREY, "user-defined": PURPLE, "byte": ORANGE, "merged": BLUE, "character": GREEN}


def vocabulary_layout(tokenizer) -> list[tuple[str, int, int]]:
    """Runs of the vocabulary by kind of piece: [(kind, first id, count), ...] in id order.

    Kinds: "special" ([PAD], [BOS], [EOS], [UNK]), "user-defined" (the 65 fixed pieces), "byte"
    (<0x00> … <0xFF>), "merged" (learned by BPE, most frequent first) and "character" (the single
    characters of the training text, which SentencePiece's BPE lists after its merges).
    """
    from grok_mini.tokenizer import USER_DEFINED_PIECES

    processor, fixed = tokenizer.processor, set(USER_DEFINED_PIECES)
    runs: list[list] = []
    for i in range(tokenizer.vocab_size):
        piece = processor.id_to_piece(i)
        if processor.is_control(i) or processor.is_unknown(i):
            kind = "special"
        elif processor.is_byte(i):
            kind = "byte"
        elif piece in fixed:
            kind = "user-defined"
        else:
            kind = "character" if len(piece) == 1 else "merged"
        if runs and runs[-1][0] == kind:
            runs[-1][2] += 1
        else:
            runs.append([kind, i, 1])
    return [tuple(run) for run in runs]


@_styled
def plot_vocabulary_layout(tokenizer, *, zoom: int = 400, name: str | None = None) -> Figure:
    """The vocabulary as a strip of ids coloured by kind of piece, whole and zoomed on the first `zoom` ids."""
    runs = vocabulary_layout(tokenizer)
    fig, axes = _figure(nrows=2, width=9.0, height=3.4)
    for ax, limit in zip(axes[:, 0], (tokenizer.vocab_size, zoom), strict=True):
        for kind, start, count in runs:
            if start >= limit:
                continue
            shown = min(count, limit - start)
            ax.barh(0, shown, left=start, height=0.8, color=_PIECE_KINDS[kind], edgecolor="white", linewidth=0.5)
            if shown / limit > 0.06:
                label = f"{kind}\n{start:,}–{start + count - 1:,}" if count > 1 else f"{kind}\n{start:,}"
                ax.text(start + shown / 2, 0, label, ha="center", va="center", color="white", fontsize=8,
                        fontweight="bold")
        ax.set_xlim(0, limit)
        ax.set_yticks([])
        ax.grid(False)
        ax.set_xlabel("token id" + ("" if limit == tokenizer.vocab_size else f" (the first {limit})"))
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour in _PIECE_KINDS.values()]
    counts = {kind: sum(c for k, _, c in runs if k == kind) for kind in _PIECE_KINDS}
    axes[0, 0].legend(handles, [f"{k} ({counts[k]:,})" for k in _PIECE_KINDS], ncols=5, fontsize=8,
                      loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(f"{name or tokenizer.source}: {tokenizer.vocab_size:,} ids; the first 325 are fixed by the "
                 "Grok-1 recipe", fontweight="bold")
    return fig


def _shown_piece(piece: str) -> str:
    return piece.replace("\n", "\\n").replace("\t", "\\t")


@_styled
def plot_tokenized_text(tokenizer, text: str, *, columns: int = 64, title: str | None = None) -> Figure:
    """The pieces of `text` as coloured boxes (▁ is a space, \\n a newline), each with its id underneath."""
    pieces, ids = tokenizer.pieces(text), tokenizer.encode(text)
    processor = tokenizer.processor
    rows, row, used = [], [], 0
    for piece, token in zip(pieces, ids, strict=True):
        width = max(len(_shown_piece(piece)), len(str(token))) + 1
        if row and used + width > columns:
            rows.append(row)
            row, used = [], 0
        row.append((piece, token, used, width))
        used += width
    rows.append(row)
    fig, [[ax]] = _figure(width=columns / 9.5 + 0.4, height=0.62 * len(rows) + 0.9)
    palette = [SKY, YELLOW, "#9ad0b7", "#e8b4d2"]
    for r, row in enumerate(rows):
        for n, (piece, token, left, width) in enumerate(row):
            if processor.is_byte(token):
                colour = ORANGE
            elif 4 <= token < 69:
                colour = PURPLE
            else:
                colour = palette[n % len(palette)]
            ax.add_patch(plt.Rectangle((left, -r * 2 - 0.9), width - 0.25, 1.0, color=colour, alpha=0.85))
            ax.text(left + (width - 0.25) / 2, -r * 2 - 0.4, _shown_piece(piece), ha="center", va="center",
                    family="monospace", fontsize=9)
            ax.text(left + (width - 0.25) / 2, -r * 2 - 1.35, str(token), ha="center", va="center",
                    family="monospace", fontsize=7, color=GREY)
    ax.set_xlim(-0.5, columns + 0.5)
    ax.set_ylim(-2 * len(rows) + 0.2, 0.4)
    ax.axis("off")
    ax.set_title(title or f"{len(text)} characters → {len(ids)} tokens ({tokenizer.source})\n"
                 "orange: byte fallback · purple: fixed pieces (ids 4–68) · grey: token id", fontsize=10)
    return fig


def compression_by_vocab_size(train_lines, heldout_text: str, vocab_sizes=(512, 1024, 2048, 4096, 8192)) -> np.ndarray:
    """Characters per token on held-out text for BPE tokenizers trained with the Grok-1 recipe: [len(vocab_sizes)]."""
    from grok_mini.tokenizer import train_tokenizer

    lines = list(train_lines)
    return np.array([len(heldout_text) / len(train_tokenizer(lines, v).encode(heldout_text)) for v in vocab_sizes])


@_styled
def plot_compression(vocab_sizes, chars_per_token, *, others: dict | None = None) -> Figure:
    """Characters per token on held-out text against vocabulary size; `others` adds {label: (vocab, chars/token)}."""
    vocab_sizes, chars_per_token = np.asarray(vocab_sizes), np.asarray(chars_per_token)
    fig, [[ax]] = _figure(width=6.8, height=3.8)
    ax.semilogx(vocab_sizes, chars_per_token, "o-", color=BLUE, base=2, label="trained here (Grok-1 recipe)")
    for v, c in zip(vocab_sizes, chars_per_token, strict=True):
        ax.annotate(f"{c:.2f}", (v, c), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=8)
    ax.axvline(325, color=GREY, linestyle=":", linewidth=1)
    ax.text(340, chars_per_token.min(), "325 fixed ids", color=GREY, fontsize=8, rotation=90, va="bottom")
    for (label, (v, c)), colour in zip((others or {}).items(), (RED, GREEN, PURPLE), strict=False):
        ax.plot([v], [c], "*", markersize=12, color=colour, label=f"{label}: {c:.2f}")
    ax.set_xlabel("vocabulary size (log scale)")
    ax.set_ylabel("characters per token (held-out text)")
    ax.set_title("A larger vocabulary means fewer, longer tokens, with diminishing returns")
    ax.legend(loc="lower right")
    return fig
