"""nbval settings for the notebooks (see notebooks/README.md).

- stderr is not compared: JAX, XLA and the kernel write warnings there that vary by machine;
- the sanitizer named in pyproject's addopts is found from any working directory.
"""

from pathlib import Path


def pytest_collectstart(collector):
    if collector.path is None or collector.path.suffix != ".ipynb":
        return
    collector.skip_compare = (*collector.skip_compare, "stderr")
    option = collector.config.option
    sanitizer = getattr(option, "nbval_sanitize_with", None)
    if sanitizer and not Path(sanitizer).is_file() and (collector.config.rootpath / sanitizer).is_file():
        option.nbval_sanitize_with = str(collector.config.rootpath / sanitizer)
