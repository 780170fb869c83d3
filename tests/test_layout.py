"""The package's shape: imports flow one way, and the model core needs no plotting library.

Imports are read from the source (ast), those inside functions included, so a cycle cannot hide in
a function-level import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "grok_mini"
# The model core: what loading, running and generating from a model needs (DESIGN.md's list down to load.py).
CORE = ["config", "files", "memory", "params", "quant", "sharding", "layers", "kernels", "moe", "model",
        "generate", "tensor_pickle", "checkpoint", "hf", "load", "tokenizer", "data"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(module: str) -> set[str]:
    """Every module (ours or not) that `module` imports anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # `from grok_mini import sharding` imports the submodule, not just the package
            found |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in MODULES}
    return found


def our_graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        targets = {name for name in imports_of(module) if name in MODULES and name != module}
        # `from grok_mini import sharding` needs the package started, but the package's __init__
        # only counts as a dependency when a name of its own is imported from it.
        graph[module] = {t for t in targets if t != "grok_mini" or _imports_names_of_package(module)}
    return graph


def _imports_names_of_package(module: str) -> bool:
    tree = ast.parse(MODULES[module].read_text())
    return any(isinstance(node, ast.ImportFrom) and node.module == "grok_mini" and node.level == 0
               and any(f"grok_mini.{alias.name}" not in MODULES for alias in node.names)
               for node in ast.walk(tree))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_between_our_modules_have_no_cycle():
    assert cycles(our_graph()) == []


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_plotting_and_no_teaching_code(module):
    name = f"grok_mini.{module}"
    assert name in MODULES, f"{name} is listed as core but does not exist"
    bad = {i for i in imports_of(name) if i.split(".")[0] in ("matplotlib", "ipywidgets", "anywidget")
           or i.startswith(("grok_mini.teach", "grok_mini.train", "grok_mini.cli"))}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("module", ["train", "explore"])
def test_training_imports_no_plotting(module):
    """The run plots live in grok_mini.teach.training; the trainer and the sweeps work without them."""
    bad = {i for i in imports_of(f"grok_mini.{module}") if i.split(".")[0] == "matplotlib"
           or i.startswith("grok_mini.teach")}
    assert not bad, f"grok_mini.{module} imports {sorted(bad)}"


# Importing matplotlib fails in the subprocesses below, as it would where only the core is installed.
NO_MATPLOTLIB = """
import importlib.abc, sys

class NoPlots(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("matplotlib is not available here")

sys.meta_path.insert(0, NoPlots())
"""


def _run_without_matplotlib(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_MATPLOTLIB + code], capture_output=True, text=True,
                          timeout=300, cwd=PACKAGE.parent, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})


def test_demo_without_matplotlib_trains_prints_and_names_the_extra(tmp_path):
    """`grok-mini demo` with the core alone: it trains and samples, and one line says how to get the plots."""
    code = f"""
from tests.test_train import cli_inputs
from pathlib import Path
from grok_mini.cli import main

config_file, corpus, fast = cli_inputs(Path({str(tmp_path)!r}))
out = Path({str(tmp_path)!r}) / "demo"
assert main(["demo", "--config", str(config_file), "--corpus", str(corpus), "--out", str(out), *fast,
             "--max-new-tokens", "4", "--no-progress"]) == 0
assert (out / "samples.txt").exists() and not (out / "loss.png").exists()
assert "matplotlib" not in sys.modules
"""
    result = _run_without_matplotlib(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "samples after training" in result.stdout and "held-out loss:" in result.stdout
    hints = [line for line in result.stdout.splitlines() if "grok-mini[teach]" in line]
    assert len(hints) == 1 and "matplotlib" in hints[0], result.stdout


def test_load_run_and_generate_without_matplotlib(tmp_path):
    """In a process where importing matplotlib fails, the package loads a checkpoint and generates."""
    code = f"""
import jax.numpy as jnp
import numpy as np
from flax import nnx
import grok_mini
from tests.conftest import TINY

model = grok_mini.Grok(TINY, dtype=jnp.float32, rngs=nnx.Rngs(0))
grok_mini.save_checkpoint(model, {str(tmp_path)!r})
loaded = grok_mini.load_checkpoint({str(tmp_path)!r}, TINY, dtype=jnp.float32)
tokens = np.array([[1, 2, 3, 4]])
print("logits", loaded(tokens).shape, "ids", grok_mini.generate(loaded, tokens[0], 3).tolist())
assert "matplotlib" not in sys.modules
"""
    result = _run_without_matplotlib(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "logits (1, 4, 97) ids [" in result.stdout
