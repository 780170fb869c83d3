"""Regenerate grok_mini/corpus/python_language_reference.json.gz, the embedded default corpus.

    /root/.pyenv/versions/3.11.7/bin/python scripts/make_corpus_snapshot.py          # write it
    /root/.pyenv/versions/3.11.7/bin/python scripts/make_corpus_snapshot.py --check  # compare only

The snapshot is the standard library's `pydoc_data.topics` (the Python Language Reference text that
`help("if")` shows) of **CPython 3.11.7**, the Python the notebooks' stored outputs were made with.
That module's text changes with every Python release, so the package ships one fixed copy instead of
reading the running Python's. Run this script with CPython 3.11.7 only: another version writes
another corpus, and then the tokenizer, every training number and the notebooks' outputs change
(tests/test_corpus.py holds the checksum; update it, the docs and the stored outputs together).

Format: UTF-8 JSON `{"python": "3.11.7", "topics": [[name, text], ...]}`, topics sorted by name,
compressed with gzip (zlib is in every Python that can run pip; lzma is not in every build).
Written byte-for-byte reproducibly (fixed JSON layout, level 9, mtime 0).
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parent.parent / "grok_mini" / "corpus" / "python_language_reference.json.gz"
PYTHON = "3.11.7"


def snapshot_bytes() -> bytes:
    from pydoc_data.topics import topics

    payload = {"python": platform.python_version(), "topics": [[name, topics[name]] for name in sorted(topics)]}
    text = json.dumps(payload, ensure_ascii=False, indent=0, sort_keys=True)
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored snapshot, write nothing")
    args = parser.parse_args()
    if platform.python_version() != PYTHON:
        sys.exit(f"make_corpus_snapshot: run with CPython {PYTHON} (this is {platform.python_version()})")
    data = snapshot_bytes()
    if args.check:
        same = SNAPSHOT.is_file() and gzip.decompress(SNAPSHOT.read_bytes()) == gzip.decompress(data)
        print(f"{SNAPSHOT.name}: {'equal to' if same else 'DIFFERENT from'} this Python's pydoc_data.topics")
        sys.exit(0 if same else 1)
    SNAPSHOT.write_bytes(data)
    print(f"wrote {SNAPSHOT} ({len(data):,} bytes)")


if __name__ == "__main__":
    main()
