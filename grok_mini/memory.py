"""Does a model fit? Counted bytes against the memory there is, before anything is built.

A config is a few numbers; the model it describes may need terabytes. Building or loading such a
model first and failing (or swapping) later is the worst way to find out, so loaders ask
`require_memory(config.weight_bytes(...), ...)` first. The memory there is: the sum of the
accelerators' limits when the devices report one (GPUs do), else the host's available memory.
"""

from __future__ import annotations

import os

from grok_mini.config import ConfigError

__all__ = ["available_memory", "require_memory"]


def _host_available() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else the physical memory, else None (unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory(devices=None) -> tuple[int | None, str]:
    """(bytes, where): the memory of `devices` (default: jax's first device) or of the host."""
    import jax

    devices = list(devices) if devices is not None else jax.devices()[:1]
    limits = [(device.memory_stats() or {}).get("bytes_limit") for device in devices]
    if limits and all(limits):
        return sum(limits), f"on {len(devices)} {devices[0].platform.upper()} device(s)"
    return _host_available(), "of available host memory"


def require_memory(needed: int, what: str, devices=None) -> None:
    """A ConfigError when `needed` bytes (of `what`) exceed the memory there is; nothing when unknown."""
    available, where = available_memory(devices)
    if available is not None and needed > available:
        raise ConfigError(f"{what} needs {needed / 2**30:,.1f} GiB, more than the {available / 2**30:,.1f} GiB "
                          f"{where}; use a smaller config, int8 weights or more devices")
