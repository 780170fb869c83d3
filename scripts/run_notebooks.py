"""Execute notebooks top to bottom and store their outputs, the way nbval will compare them.

    python scripts/run_notebooks.py                          # every notebooks/NN_*.ipynb
    python scripts/run_notebooks.py notebooks/03_rope.ipynb  # some
    python scripts/run_notebooks.py --check                  # run, compare nothing, write nothing: timings only
    python scripts/run_notebooks.py --check --cell-times NB  # ... and the slowest cells

Runs each notebook in a fresh kernel of *this* Python (the virtual environment's), from the
notebooks/ folder, with JAX on the CPU and a JAX compilation cache shared by the kernels of one
run (so a notebook's time depends on what ran before it in the same run); prints each notebook's
wall time. Cell metadata that
changes from run to run (timings) is not recorded, so re-running an unchanged notebook changes only
what the code prints and draws. Then run `pytest notebooks/` to check the stored outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "python3"


def check_kernel() -> None:
    """The python3 kernel must start this interpreter (jupyter_client maps argv[0] 'python' to it)."""
    argv0 = KernelSpecManager().get_kernel_spec(KERNEL).argv[0]
    if argv0 not in ("python", "python3", sys.executable):
        sys.exit(f"run_notebooks: the '{KERNEL}' kernel starts {argv0}, not {sys.executable}; "
                 "activate the virtual environment (. .venv/bin/activate) and try again")


def cell_seconds(cell) -> float:
    """Wall time of one executed cell, from the timing metadata nbclient records."""
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    return (datetime.fromisoformat(end.replace("Z", "+00:00")) -
            datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


def run(path: Path, *, write: bool, cell_times: bool = False) -> float:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=600, record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    code = [(i, cell) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    if cell_times:
        for i, cell in sorted(code, key=lambda item: -cell_seconds(item[1]))[:8]:
            first_line = cell.source.splitlines()[0] if cell.source else ""
            print(f"    cell {i:3d} {cell_seconds(cell):6.1f} s  {first_line[:70]}")
    for _, cell in code:
        cell.metadata.pop("execution", None)  # timestamps would change the file on every run
    if write:
        notebook.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3 (ipykernel)",
                                           "language": "python"}
        nbformat.write(notebook, path)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9]*.ipynb")
    parser.add_argument("--check", action="store_true", help="execute without writing outputs back")
    parser.add_argument("--cell-times", action="store_true", help="print each notebook's slowest cells")
    args = parser.parse_args()
    check_kernel()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # inherited by the kernels
    # One JAX compilation cache for the kernels of this run (as notebooks/conftest.py does for nbval).
    cache = tempfile.TemporaryDirectory(prefix="grok-mini-jax-cache-")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache.name)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    paths = args.notebooks or sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    total = 0.0
    for path in paths:
        seconds = run(path.resolve(), write=not args.check, cell_times=args.cell_times)
        total += seconds
        print(f"{path.name:<40} {seconds:6.1f} s", flush=True)
    print(f"{'total':<40} {total:6.1f} s")


if __name__ == "__main__":
    main()
