"""The notebooks' shared plot style: colours, the `_styled` decorator, figure helpers.
"""

from __future__ import annotations

import functools

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

GIB = 2**30


BILLION = 1e9


# Colour-blind-safe palette (Okabe–Ito), one meaning per colour across the notebooks.
BLUE, ORANGE, GREEN, RED, PURPLE, GREY, SKY, YELLOW = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#7f7f7f", "#56B4E9", "#F0E442")


_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}


def _styled(plot):
    """Draw inside the shared style without changing the caller's matplotlib settings."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs) -> Figure:
        with plt.rc_context(_STYLE):
            figure = plot(*args, **kwargs)
            # Jupyter switches interactive mode on when pyplot first loads its backend, which may happen
            # inside this context; leaving the context must not switch it off (figures would stop showing).
            interactive = matplotlib.is_interactive()
        matplotlib.interactive(interactive)
        return figure

    return wrapper


def _figure(ncols: int = 1, nrows: int = 1, *, width: float = 7.0, height: float = 4.0, **kwargs):
    return plt.subplots(nrows, ncols, figsize=(width, height), layout="constrained", squeeze=False, **kwargs)


def _human(n: float) -> str:
    """315684820992 → '315.7 B', 1572864 → '1.6 M'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f}"
