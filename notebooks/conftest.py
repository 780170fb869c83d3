"""nbval settings for the notebooks (see notebooks/README.md).

- stderr is not compared: JAX, XLA and the kernel write warnings there that vary by machine;
- the sanitizer named in pyproject's addopts is found from any working directory;
- the notebooks' kernels (which inherit this process's environment) share one JAX compilation
  cache, made fresh for this pytest run: the toy model's many small compilations then happen
  once for the whole suite instead of once per notebook. Outputs do not depend on it.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest


def _share_compilation_cache():
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # the caller chose one
        return
    folder = tempfile.mkdtemp(prefix="grok-mini-jax-cache-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # cache the small ones too


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before the first notebook's kernel starts (after tests/ have run: they see no change)."""
    if item.path.suffix == ".ipynb":
        _share_compilation_cache()


def pytest_collectstart(collector):
    if collector.path is None or collector.path.suffix != ".ipynb":
        return
    collector.skip_compare = (*collector.skip_compare, "stderr")
    option = collector.config.option
    sanitizer = getattr(option, "nbval_sanitize_with", None)
    if sanitizer and not Path(sanitizer).is_file() and (collector.config.rootpath / sanitizer).is_file():
        option.nbval_sanitize_with = str(collector.config.rootpath / sanitizer)
