"""The embedded corpus is one fixed snapshot, shipped as package data, the same on every Python."""

import gzip
import hashlib
import json
import platform
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from grok_mini.data import EMBEDDED_CORPUS_FILE, embedded_corpus

ROOT = Path(__file__).parent.parent
# sha256 of the decompressed snapshot (CPython 3.11.7's pydoc_data.topics as JSON): changing the corpus
# changes the tokenizer, every loss and the notebooks' outputs, so it must be a deliberate act.
SNAPSHOT_SHA256 = "aa194431442bb44311cda74d8bcd0658b69034532363acf0026c3521e5cace5b"


def snapshot_json() -> bytes:
    return gzip.decompress((resources.files("grok_mini") / "corpus" / EMBEDDED_CORPUS_FILE).read_bytes())


def test_snapshot_checksum_never_drifts():
    assert hashlib.sha256(snapshot_json()).hexdigest() == SNAPSHOT_SHA256
    payload = json.loads(snapshot_json())
    assert payload["python"] == "3.11.7"
    corpus = embedded_corpus()
    assert len(corpus.documents) == 79 and corpus.num_chars == 464_970
    assert [name for name, _ in corpus.documents] == sorted(name for name, _ in corpus.documents)


@pytest.mark.skipif(platform.python_version() != "3.11.7", reason="the snapshot is CPython 3.11.7's pydoc_data")
def test_snapshot_equals_python_3_11_7_pydoc_data():
    from pydoc_data.topics import topics

    expected = tuple((name, topics[name]) for name in sorted(topics))  # what embedded_corpus() used to read
    assert embedded_corpus().documents == expected


def test_snapshot_script_reproduces_the_file_on_3_11_7():
    if platform.python_version() != "3.11.7":
        pytest.skip("the snapshot is made with CPython 3.11.7")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_corpus_snapshot.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snapshot_is_package_data_in_the_wheel(tmp_path):
    """A non-editable install has the corpus: the built wheel contains it and its licence."""
    # pip builds in an isolated environment, fetching pyproject's build requirements (setuptools) from the index.
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("grok_mini-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"grok_mini/corpus/{EMBEDDED_CORPUS_FILE}" in names
    assert "grok_mini/corpus/LICENSE-PSF.txt" in names
