"""What every benchmark measures with: timing, the copy bandwidth, the bytes a step reads, "× bound".

One module, so that every ratio in benchmarks/RESULTS.md uses the same bound:

    × bound = measured seconds ÷ (bytes the step must read ÷ copy bandwidth measured in the same run)

Conventions:
- **Timing** (`seconds_per_call`, `timed`): a warm-up call first (compilation and the first run stay
  out of the numbers), then samples of back-to-back calls ended by `jax.block_until_ready` (JAX
  dispatches asynchronously, so the host's overhead hides behind the device's work); the median of
  the samples, or the best where the caller asks for it. Seconds, always.
- **Copy bandwidth** (`copy_bandwidth`): one large device-to-device copy, y = x + 1 over a float32
  array (4 GiB a device on a GPU, less if free memory is short; 64 MiB on a CPU). It reads every
  byte of x once and writes every byte of y once, and we count both: bandwidth = 2 · bytes(x) ÷
  seconds, the convention of a datasheet's "memory bandwidth" and of a timed cudaMemcpy between
  two device buffers. On a mesh every device copies its own shard at the same time and the number
  is per device.
- **Bytes a step reads** (`array_bytes`, `decode_bytes`): counted from the arrays as they lie on one
  device (int8 matrices, their scales, the float32 embedding, norms and router, the KV cache), not
  from a formula. A decode step reads each of them once; what it writes (one cache position, a
  token) is small and left out. So the bound is bytes read ÷ the (read + write) copy bandwidth: the
  time to stream those bytes through memory at the rate the copy moved bytes.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

GiB = 2**30


# ---- timing ------------------------------------------------------------------------------------

def timed(run: Callable[[], Any], calls: int = 1) -> tuple[float, Any]:
    """(seconds per call, the last result) of `calls` back-to-back calls of run(), until the result is ready."""
    start = time.perf_counter()
    for _ in range(calls):
        result = run()
    jax.block_until_ready(result)
    return (time.perf_counter() - start) / calls, result


def seconds_per_call(fn: Callable, *args, repeats: int = 5, calls: int | None = None, budget_s: float = 0.2,
                     best: bool = False) -> float:
    """Seconds per call of fn(*args), a jitted function whose arguments it does not donate.

    One warm-up call (compiles and runs once), then `repeats` samples of `calls` back-to-back calls;
    calls=None sizes a sample to about budget_s (one call when a call is slower, at most 50).
    Returns the median of the samples, or the smallest with best=True.
    """
    jax.block_until_ready(fn(*args))
    if calls is None:
        once, _ = timed(lambda: fn(*args))
        calls = max(1, min(50, round(budget_s / once)))
    samples = [timed(lambda: fn(*args), calls)[0] for _ in range(repeats)]
    return min(samples) if best else statistics.median(samples)


def side_by_side(fns: dict[str, tuple[Callable, tuple]], repeats: int, calls: int = 1) -> dict[str, float]:
    """Median seconds per call of each function (name → (fn, args)), warmed up first; the functions take
    turns in every repeat, so a busy machine slows them alike."""
    for fn, args in fns.values():
        jax.block_until_ready(fn(*args))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, args) in fns.items():
            samples[name].append(timed(lambda fn=fn, args=args: fn(*args), calls)[0])
    return {name: statistics.median(times) for name, times in samples.items()}


def seconds_per_item(items: Iterable, skip: int = 1) -> float:
    """Seconds per item of an iterator that hands over host values (e.g. `generate.stream`'s token ids),
    from the time the `skip`-th item arrived to the last: what its caller waits per item."""
    stamps = [time.perf_counter() for _ in items]
    return (stamps[-1] - stamps[skip - 1]) / (len(stamps) - skip)


def relative_error(ours, reference) -> float:
    """‖ours − reference‖ / ‖reference‖, in float64."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


# ---- the ceilings -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CopyBandwidth:
    """A measured copy: bytes_per_second counts what was read plus what was written, per device."""

    bytes_per_second: float
    array_bytes: int  # the size of x on each device
    devices: int

    def __str__(self) -> str:
        where = f" on each of {self.devices} devices at once" if self.devices > 1 else ""
        return (f"{self.bytes_per_second / 1e9:,.0f} GB/s per device (y = x + 1 over {self.array_bytes / GiB:.2f} GiB "
                f"of float32{where}: bytes read + written, median of 5)")


def free_bytes(device) -> int | None:
    """Memory JAX may still allocate on a device (None where the backend keeps no statistics, e.g. CPU)."""
    try:
        stats = device.memory_stats() or {}
    except Exception:
        return None
    if "bytes_limit" not in stats:
        return None
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0)


def copy_bandwidth(mesh: Mesh | None = None, array_bytes: int | None = None) -> CopyBandwidth:
    """The device memory bandwidth of one large copy, y = x + 1 (see the module docstring).

    mesh: copy on every device of it at once, x split evenly (default: the first device alone).
    array_bytes: the size of x per device (default: 4 GiB on an accelerator, at most a quarter of its
    free memory, since x, y and the next call's y live together; 64 MiB on a CPU).
    """
    devices = list(mesh.devices.flat) if mesh is not None else [jax.devices()[0]]
    if array_bytes is None:
        free = [free_bytes(d) for d in devices]
        on_cpu = devices[0].platform == "cpu"
        array_bytes = 64 << 20 if on_cpu or None in free else min(4 * GiB, min(free) // 4)
    rows = array_bytes // (4 * 1024)  # [rows, 1024] float32 a device
    shape = (len(devices) * rows, 1024)
    sharding = (NamedSharding(mesh, P(mesh.axis_names, None)) if mesh is not None
                else jax.sharding.SingleDeviceSharding(devices[0]))
    x = jax.jit(lambda: jax.lax.broadcasted_iota(jnp.float32, shape, 1), out_shardings=sharding)()
    seconds = seconds_per_call(jax.jit(lambda x: x + 1), x)
    del x
    return CopyBandwidth(2 * rows * 1024 * 4 / seconds, rows * 1024 * 4, len(devices))


def matmul_rate(n: int = 8192) -> float:
    """FLOP/s of an n × n × n bfloat16 matrix product on random data, on the default device."""
    ka, kb = jax.random.split(jax.random.key(2))
    a, b = (jax.random.normal(k, (n, n), jnp.bfloat16) for k in (ka, kb))
    return 2 * n**3 / seconds_per_call(jax.jit(lambda a, b: a @ b), a, b)


# ---- bytes ------------------------------------------------------------------------------------------

def array_bytes(tree, device=None) -> int:
    """Bytes of the arrays in a pytree (an nnx module or state, a dict of arrays, a KV cache) that lie
    on `device` (default: the first device): a replicated array counts whole, a split one its shard."""
    device = jax.devices()[0] if device is None else device
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree)
    total = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            total += sum(shard.data.nbytes for shard in leaf.addressable_shards if shard.device == device)
        elif isinstance(leaf, np.ndarray):
            total += leaf.nbytes
    return total


@dataclasses.dataclass(frozen=True)
class DecodeBytes:
    """What one decode step reads on one device, in bytes."""

    weights: int  # every weight the device holds (a dense MoE would read them all)
    token_weights: int  # the weights one token reads: the experts counted at k of E
    cache: int  # the KV cache: attention reads its whole length, masked
    batch_weights: int = 0  # the weights a step of `batch` tokens reads: the experts at their expected use

    @property
    def all_read(self) -> int:
        return self.weights + self.cache

    @property
    def token_read(self) -> int:
        return self.token_weights + self.cache

    @property
    def batch_read(self) -> int:
        return self.batch_weights + self.cache


def decode_bytes(model: nnx.Module, cache=None, device=None, batch: int = 1) -> DecodeBytes:
    """The bytes a decode step of a Grok model reads on `device` (default: the first device), from the
    model's arrays as placed: int8 matrices, scales, embedding (read whole by the tied output), norms
    and router, and the KV cache if given.

    A step of `batch` tokens (one a sequence) reads an expert's weights if any token chose it: with
    each token's k of E experts uniformly random, a share 1 - (1 - k/E)^batch of them on average
    (k/E for one token; 0.999 at batch 32 for Grok-1's 2 of 8).
    """
    config = model.config
    share = config.num_selected_experts / config.num_experts
    weights = experts = 0
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        on_device = array_bytes(variable.get_value(), device)
        weights += on_device
        experts += on_device if "experts" in path else 0
    others = weights - experts
    return DecodeBytes(weights, int(others + experts * share), array_bytes(cache, device) if cache is not None else 0,
                       int(others + experts * (1 - (1 - share) ** batch)))


# ---- the ratio ----------------------------------------------------------------------------------

def bound_seconds(nbytes: float, bandwidth: CopyBandwidth) -> float:
    """The least time to read nbytes at the measured copy bandwidth."""
    return nbytes / bandwidth.bytes_per_second


def times_bound(seconds: float, nbytes: float, bandwidth: CopyBandwidth) -> float:
    """Measured seconds ÷ the bound for reading nbytes: 1.0 is the memory's speed, more is slower."""
    return seconds / bound_seconds(nbytes, bandwidth)


def environment() -> str:
    """The machine and software a number was measured on, for the reports."""
    devices = jax.devices()
    return (f"{len(devices)} × {devices[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
            f"flax {flax.__version__}, Python {platform.python_version()}")
