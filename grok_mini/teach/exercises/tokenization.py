"""Notebook 01 (tokenization): one BPE merge, and turning SentencePiece pieces back into text."""

from __future__ import annotations

from grok_mini.teach.exercises import ExerciseFailed, call, expect_equal, run_check

__all__ = ["check_merge_pair", "check_decode_pieces", "MERGE_CASES", "DECODE_CASES"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "merge_pair": (
        "Walk the list once from the left, looking at each piece and its right neighbour.",
        "When the pair matches, emit the joined piece and jump over both; otherwise emit the piece and "
        "move on by one.",
        "Compare whole pieces, not characters, merge every occurrence rather than the first, and return a "
        "list.",
    ),
    "decode_pieces": (
        "Pieces like <0xF0> stand for raw bytes; the others are text, with ▁ standing for a space.",
        "Collect everything as bytes and decode the bytes as UTF-8 once at the end: one character can "
        "span several byte pieces.",
        "SentencePiece adds one space at the start of the text (add_dummy_prefix): remove exactly that "
        "one space, not every leading space.",
    ),
}
# What would answer the exercise in one call (the package's own function, or a library's): refused.
REFUSE = {"merge_pair": (), "decode_pieces": ()}

# (pieces, pair to merge, expected pieces): a word, repeated pairs, overlaps, no match, the last pair.
MERGE_CASES = [
    (["▁", "t", "h", "e"], ("t", "h"), ["▁", "th", "e"]),
    (["▁", "t", "h", "e", "▁", "t", "h", "e", "n"], ("t", "h"), ["▁", "th", "e", "▁", "th", "e", "n"]),
    (["a", "a", "a"], ("a", "a"), ["aa", "a"]),
    (["a", "a", "a", "a"], ("a", "a"), ["aa", "aa"]),
    (["▁", "▁", "▁"], ("▁", "▁"), ["▁▁", "▁"]),
    (["▁", "i", "f"], ("f", "o"), ["▁", "i", "f"]),
    (["▁", "o", "f"], ("o", "f"), ["▁", "of"]),
    (["▁at", "h", "t", "h"], ("t", "h"), ["▁at", "h", "th"]),
]

# (pieces as the Grok-1 recipe produces them, the text they decode to).
DECODE_CASES = [
    (["▁The", "▁if", "▁statement"], "The if statement"),
    (["▁", "2", "0", "2", "4"], "2024"),
    (["▁a", "▁▁", "b"], "a  b"),
    (["▁▁", "▁lead"], "  lead"),
    (["▁def", "▁f", "():", "\n", "▁▁▁▁", "return", "▁", "1"], "def f():\n    return 1"),
    (["▁", "<0xF0>", "<0x9F>", "<0xA7>", "<0xAC>"], "🧬"),
    (["▁caf", "<0xC3>", "<0xA9>", "▁au", "▁l", "ait"], "café au lait"),
    (["▁x", "\t\t", "y"], "x\t\ty"),
]


def _merge_first_only(pieces, pair):
    for i in range(len(pieces) - 1):
        if (pieces[i], pieces[i + 1]) == tuple(pair):
            return [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2:]]
    return list(pieces)


def _merge_right_to_left(pieces, pair):
    out = list(pieces)
    i = len(out) - 2
    while i >= 0:
        if (out[i], out[i + 1]) == tuple(pair):
            out[i:i + 2] = [out[i] + out[i + 1]]
        i -= 1
    return out


def _merge_by_string_replace(pieces, pair):
    return [p for p in " ".join(pieces).replace(" ".join(pair), "".join(pair)).split(" ")]


def check_merge_pair(merge_pair) -> bool:
    """merge_pair(pieces, pair) → pieces with every occurrence of the adjacent pair joined, left to right."""

    def check():
        for pieces, pair, expected in MERGE_CASES:
            got = call(merge_pair, list(pieces), pair)
            if not isinstance(got, list):
                raise ExerciseFailed(f"merge_pair({pieces}, {pair}) should return a list of strings, "
                                     f"got {type(got).__name__} {got!r}")
            mistakes = [
                (_merge_first_only(pieces, pair), "merge every occurrence of the pair, not only the first: "
                                                  "one BPE merge rule rewrites the whole sequence."),
                (_merge_right_to_left(pieces, pair), "scan from the left: ('a', 'a') turns a a a into aa a, "
                                                     "and a piece that was just merged is not merged again."),
                (_merge_by_string_replace(pieces, pair), "compare whole pieces, not characters of the joined "
                                                         "string: ('t', 'h') must not match inside 'th'."),
            ]
            expect_equal(got, expected, what=f"merge_pair({pieces}, {pair})", mistakes=mistakes)
        return f"{len(MERGE_CASES)} cases, including overlapping pairs and pairs that do not occur"

    return run_check("merge_pair", check, answer=merge_pair, hints=HINTS["merge_pair"], refuse=REFUSE["merge_pair"])


def _decode_keeping_prefix(pieces):
    return _reference_decode(pieces, strip_prefix=False)


def _decode_stripping_all(pieces):
    return _reference_decode(pieces).lstrip(" ")


def _decode_bytes_one_by_one(pieces):
    text = "".join(chr(int(p[3:5], 16)) if p.startswith("<0x") else p for p in pieces).replace("▁", " ")
    return text[1:] if text.startswith(" ") else text


def _reference_decode(pieces, strip_prefix: bool = True) -> str:
    raw = b"".join(bytes([int(p[3:5], 16)]) if p.startswith("<0x") and p.endswith(">") and len(p) == 6
                   else p.replace("▁", " ").encode() for p in pieces)
    text = raw.decode("utf-8", errors="replace")
    return text[1:] if strip_prefix and text.startswith(" ") else text


def check_decode_pieces(decode_pieces) -> bool:
    """decode_pieces(pieces) → the text: ▁ is a space, byte pieces are UTF-8 bytes, one dummy-prefix space goes."""

    def check():
        for pieces, expected in DECODE_CASES:
            got = call(decode_pieces, list(pieces))
            if not isinstance(got, str):
                raise ExerciseFailed(f"decode_pieces({pieces}) should return a str, got {type(got).__name__} {got!r}")
            mistakes = [
                (_decode_keeping_prefix(pieces), "SentencePiece adds one '▁' before the first word "
                                                 "(add_dummy_prefix); remove that one leading space."),
                (_decode_stripping_all(pieces), "remove only the one space that the dummy prefix added: the "
                                                "text itself may start with spaces."),
                (_decode_bytes_one_by_one(pieces), "byte pieces <0xXX> are UTF-8 bytes: join consecutive bytes "
                                                   "and decode them together (🧬 is 4 bytes), not chr() each."),
                ("".join(pieces), "'▁' (U+2581) stands for a space: replace it."),
            ]
            expect_equal(got, expected, what=f"decode_pieces({pieces})", mistakes=mistakes)
        return f"{len(DECODE_CASES)} piece lists: words, digits, runs of spaces, code, byte fallback"

    return run_check("decode_pieces", check, answer=decode_pieces,
                     hints=HINTS["decode_pieces"], refuse=REFUSE["decode_pieces"])
