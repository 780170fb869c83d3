"""The commands the README and notebook 09 tell a reader to run exist, with the flags they use."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
HF = Path(sys.executable).parent / "hf"  # installed by huggingface_hub, a dependency


def download_commands() -> list[tuple[str, str]]:
    """(where, command) for every `hf download` line in the README and notebook 09's markdown."""
    texts = {"README.md": (ROOT / "README.md").read_text()}
    notebook = json.loads((ROOT / "notebooks" / "09_real_weights.ipynb").read_text())
    markdown = [cell for cell in notebook["cells"] if cell["cell_type"] == "markdown"]
    texts["09_real_weights.ipynb"] = "\n".join("".join(cell["source"]) for cell in markdown)
    found = [(where, line.strip()) for where, text in texts.items() for line in text.splitlines()
             if re.match(r"\s*(hf|huggingface-cli) download\b", line)]
    assert {where for where, _ in found} == set(texts), f"a download command is missing: {found}"
    return found


def test_no_document_uses_the_removed_huggingface_cli():
    for where, command in download_commands():
        assert command.startswith("hf download "), f"{where}: {command}"


@pytest.fixture(scope="module")
def download_help() -> str:
    assert HF.is_file(), f"{HF} missing: huggingface_hub should install the `hf` command"
    result = subprocess.run([str(HF), "download", "--help"], capture_output=True, text=True,
                            env={"PATH": str(HF.parent), "NO_COLOR": "1", "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("where,command", download_commands())
def test_documented_download_command_parses(where, command, download_help):
    """Every flag is one `hf download --help` lists, and every other word is a flag's value: no stray
    word that hf would take as a file name (which would silently override --include)."""
    words = shlex.split(command)[2:]
    assert words[0] == "xai-org/grok-1", f"{where}: {command}"
    flags = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", download_help))
    rest = iter(words[1:])
    for word in rest:  # the flags used here (--repo-type, --include, --local-dir) each take one value
        assert word.startswith("--"), f"{where}: '{word}' is not a flag's value: hf would read it as a file name"
        assert word in flags, f"{where}: `hf download` has no flag {word} (its help lists {sorted(flags)})"
        value = next(rest, None)
        assert value and not value.startswith("--"), f"{where}: {word} needs a value"
