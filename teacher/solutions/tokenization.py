"""Reference solutions for notebook 01 (tokenization). Checked by grok_mini.teach.exercises.tokenization."""


def merge_pair(pieces, pair):
    merged, i = [], 0
    while i < len(pieces):
        if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == tuple(pair):
            merged.append(pieces[i] + pieces[i + 1])  # left to right: a merged piece is not looked at again
            i += 2
        else:
            merged.append(pieces[i])
            i += 1
    return merged


def decode_pieces(pieces):
    raw = b""
    for piece in pieces:
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            raw += bytes([int(piece[3:5], 16)])  # byte fallback: one UTF-8 byte
        else:
            raw += piece.replace("▁", " ").encode("utf-8")  # ▁ (U+2581) marks a space
    text = raw.decode("utf-8")  # consecutive byte pieces form one character together
    return text[1:] if text.startswith(" ") else text  # the one space add_dummy_prefix put in front
