"""environment.yml (conda users) lists the same dependencies as pyproject.toml (the pip truth)."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def normalise(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {normalise(r) for r in project["dependencies"] + extras["dev"]}
    assert {normalise(r) for r in extras["teach"]} <= wanted, "dev installs everything teach does"
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip_entries = [line.strip()[2:] for line in lines if line.startswith("      - ")]  # under `- pip:`
    listed = {normalise(entry) for entry in pip_entries if entry != "-e ."}
    assert listed == wanted, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"
