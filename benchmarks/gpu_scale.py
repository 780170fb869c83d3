"""Full-width Grok-1 layers on all the GPUs of one host: write, load, run; a markdown table of the numbers.

    python benchmarks/gpu_scale.py --dir /tmp/grok-bench --out report.md            # on a GPU host
    python benchmarks/gpu_scale.py --smoke --dir /tmp/grok-smoke --out smoke.md     # tiny, any machine

Phases (each prints a timestamped line; the report is rewritten after every phase, so a run cut
short still leaves what it measured):
1. the devices, and each GPU's memory bandwidth measured by one large copy (benchmarks/measure.py:
   bytes read + written; the bound of every "×" in the report);
2. how many layers fit: the GPUs' memory less a reserve per GPU (activations, KV cache,
   dequantised temporaries, XLA workspace; `--reserve-gib`), at most 64 (`--layers N` to choose);
3. a release-layout checkpoint (`ckpt-0/tensorNNNNN_000` pickles, int8 matrices + bfloat16 scales,
   float32 embedding, norms and router) of full-width Grok-1 layers with random int8 weights. One
   layer is written; the other layers' files are hard links to it (identical layers time the same),
   so the disk holds one layer plus the embedding, ~8 GB, whatever the count. The files are then in
   the page cache, so the load below measures the loader, not the disk:
4. the disk's cold read speed, on one expert file whose cached pages are dropped first;
5. grok_mini.load_checkpoint(dir, config, mesh=make_mesh(), quantized=True) over all GPUs: load time,
   host RAM peak during the load, memory per GPU;
6. prefill tokens/s and greedy decode ms/token (bfloat16 activations, int8 weights, KV cache) through
   grok_mini.generate's `prefill` and `decode_step`, the compiled functions `grok-mini generate` runs,
   and decode through `generate.stream` itself; against the bound "bytes each GPU reads per decoded
   token / its measured copy bandwidth", both for all its weights (what a dense MoE reads) and for the
   weights a token uses (2 of 8 experts), each with the KV cache. The embedding is held in bfloat16, as
   `grok-mini generate` holds it (`--embedding float32` for the release's float32);
7. with --batches B ..., prefill and decode at each batch size in one table, the bound being the weights
   that batch reads (experts at their expected use, measure.decode_bytes) plus the KV cache; with
   `--embedding both` (the default) each size with the embedding in float32 and in bfloat16, and with
   --compare-scan the sizes past moe.ALL_EXPERTS_TOKENS also by the tiles' scan.

    python benchmarks/gpu_scale.py --dir /tmp/gb --out sweep.md --layers 8 --prompt-len 512 \
        --decode-steps 128 --batches 1 32 64 96 128 --compare-scan

Needs only jax, flax, numpy and grok_mini's own imports (run from the repository root; no install).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = time.time()


def log(message: str) -> None:
    print(f"[{time.time() - START:7.1f}s] {message}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where to write the checkpoint (reused if complete)")
    parser.add_argument("--out", type=Path, required=True, help="markdown report to write")
    parser.add_argument("--layers", default="auto", help="number of layers, or 'auto' (as many as fit, ≤ 64)")
    parser.add_argument("--mesh", default=None, help="data,expert,model sizes (default: all devices on model)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="then also prefill and decode these batch sizes (one sequence each) in the same process")
    parser.add_argument("--embedding", choices=["float32", "bfloat16", "both"], default="both",
                        help="how the tied embedding is held: float32 as released, bfloat16 as `grok-mini generate` "
                             "holds it (the same logits), or both (default): bfloat16, and the batch sweep both ways")
    parser.add_argument("--prompt-len", type=int, default=None, help="prefill length (default 256; smoke 16)")
    parser.add_argument("--decode-steps", type=int, default=None, help="timed decode steps (default 32; smoke 8)")
    parser.add_argument("--reserve-gib", type=float, default=8.0,
                        help="GPU memory kept free per GPU when choosing the layer count (activations, KV cache, "
                             "dequantised temporaries, XLA workspace)")
    parser.add_argument("--dispatch", default=None,
                        help="MoE dispatch (grok_mini.moe.DISPATCHES; default: the model's own, sparse)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="also trace 8 decode steps and write device time by kernel to this markdown file "
                             "(and the compiled step beside it, .hlo.txt)")
    parser.add_argument("--compare-scan", action="store_true",
                        help="also time decode with the MoE's GPU decode paths off (int8_kernel=False)")
    parser.add_argument("--int4", type=int, default=None, metavar="GROUP",
                        help="then load the same checkpoint with the experts re-quantised to int4 in groups of GROUP "
                             "input rows (load_checkpoint(quantized=Int4(GROUP))) and time it beside int8")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 4 simulated devices if no GPU")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    # Before JAX starts: let it use most of each GPU (its default is 75 %), and give a CPU-only
    # smoke run 4 devices so the mesh code is exercised.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    if ARGS.smoke and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import measure  # noqa: E402  (benchmarks/measure.py: timing, copy bandwidth, bytes, × bound)
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from grok_mini import GrokConfig, load_checkpoint, make_mesh, moe, preset  # noqa: E402
from grok_mini.checkpoint import CHECKPOINT_DIR, QuantizedWeight8bit, _pickle_release, release_layout  # noqa: E402
from grok_mini.generate import BUCKET, Sampler, decode_step, prefill, stream  # noqa: E402
from grok_mini.quant import Int4  # noqa: E402
from grok_mini.sharding import shard_cache, shard_tokens  # noqa: E402

GB, GiB = 1e9, 2**30
PROFILE_STEPS = 8  # decode steps traced with --profile
SMOKE = GrokConfig(vocab_size=2048, emb_size=256, key_size=32, num_q_heads=8, num_kv_heads=4, num_layers=4,
                   widening_factor=8.0, sequence_len=128, attn_output_multiplier=32**-0.5,
                   embedding_multiplier_scale=256**0.5)


# ---- helpers ----------------------------------------------------------------------------------------

def proc_status(field: str) -> int | None:
    """VmRSS / VmHWM of this process in bytes (None where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def device_memory(device) -> dict:
    try:
        return device.memory_stats() or {}
    except Exception:  # CPU devices have no memory stats
        return {}


def gb(n: float | None) -> str:
    """Bytes in GB (MB below 1 GB, for smoke runs)."""
    if n is None:
        return "n/a"
    return f"{n / GB:,.2f} GB" if n >= GB else f"{n / 1e6:,.1f} MB"


def layer_bytes(config: GrokConfig) -> int:
    """int8 bytes of one decoder layer as released (int8 matrices + bf16 scales, float32 norms and router)."""
    one = dataclasses.replace(config, num_layers=1)
    return one.weight_bytes("int8") - 4 * (one.vocab_size * one.emb_size + one.emb_size)


class Report:
    """Rows of (quantity, value, note), rewritten to --out after every phase."""

    def __init__(self, path: Path, title: str):
        self.path, self.title, self.rows, self.notes, self.sections = path, title, [], [], {}

    def add(self, quantity: str, value: str, note: str = "") -> None:
        self.rows.append((quantity, value, note))
        log(f"{quantity}: {value} {note}")
        self.write()

    def note(self, text: str) -> None:
        self.notes.append(text)
        log(text)
        self.write()

    def section(self, title: str, lines: list[str]) -> None:
        """A titled block after the notes (a table), replaced whole by the next call with that title."""
        self.sections[title] = lines
        self.write()

    def write(self) -> None:
        lines = [f"# {self.title}", "", "| quantity | value | note |", "| --- | --- | --- |"]
        lines += [f"| {q} | {v} | {n} |" for q, v, n in self.rows]
        lines += [""] + [f"- {text}" for text in self.notes]
        for title, body in self.sections.items():
            lines += ["", f"## {title}", ""] + body
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(lines) + "\n")


# ---- phase 3: the checkpoint ---------------------------------------------------------------------------

def write_checkpoint(config: GrokConfig, layout: list, folder: Path, seed: int) -> dict:
    """Layer 0 and the embedding written with random values; every other layer hard-linked to layer 0."""
    marker = folder / "grok_bench.json"
    wanted = {"config": dataclasses.asdict(config), "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        log(f"reusing the complete checkpoint in {folder}")
        return {"written_bytes": 0, "seconds": 0.0}
    directory = folder / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    rng = np.random.default_rng(seed)

    def random_int8(shape) -> np.ndarray:  # raw random bytes: several GB/s
        return np.frombuffer(rng.bytes(math.prod(shape)), np.int8).reshape(shape)

    layer0 = {}
    written, start = 0, time.time()
    for tensor in layout:  # layer 0 and the two top-level tensors first
        parts = tensor.path.split("/")
        if parts[0] == "transformer" and parts[1] != "decoder_layer_0":
            continue
        if tensor.blocks is None:
            if tensor.path.endswith("embeddings"):
                value = random_int8(tensor.shape).astype(np.float32) / 127
            elif tensor.path.endswith("scale"):
                value = np.ones(tensor.shape, np.float32)
            else:  # router
                value = rng.standard_normal(tensor.shape, np.float32) / math.sqrt(tensor.shape[0])
        else:
            size_in = tensor.shape[-2]
            scales = np.full((*tensor.shape[:-2], tensor.blocks, tensor.shape[-1]),
                             1 / (73.6 * math.sqrt(size_in)), np.float32)  # unit-variance outputs
            value = QuantizedWeight8bit(weight=random_int8(tensor.shape), scales=scales.astype(jnp.bfloat16))
        data = _pickle_release(value)
        (directory / tensor.filename).write_bytes(data)
        written += len(data)
        del value, data
        if parts[0] == "transformer":
            layer0["/".join(parts[2:])] = tensor.filename
        log(f"  wrote {tensor.filename} {tensor.path} {list(tensor.shape)}")
    for tensor in layout:  # every other layer: a hard link to layer 0's file of the same parameter
        parts = tensor.path.split("/")
        if parts[0] == "transformer" and parts[1] != "decoder_layer_0":
            os.link(directory / layer0["/".join(parts[2:])], directory / tensor.filename)
    marker.write_text(json.dumps(wanted))
    return {"written_bytes": written, "seconds": time.time() - start}


def cold_read_speed(path: Path) -> float | None:
    """Read one file after dropping its cached pages (posix_fadvise DONTNEED): bytes/s, or None."""
    if not hasattr(os, "posix_fadvise"):
        return None
    with open(path, "rb") as file:
        os.fsync(file.fileno())
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        start, size = time.perf_counter(), 0
        while chunk := file.read(64 << 20):
            size += len(chunk)
    return size / (time.perf_counter() - start)


# ---- phase 6: prefill and decode --------------------------------------------------------------------

def run_model(model, mesh, config: GrokConfig, batch: int, prompt_len: int, steps: int, cache_len: int,
              report: Report, seed: int, profile: Path | None = None, through_stream: bool = False) -> dict:
    """Prefill and greedy decode through grok_mini.generate's `prefill` and `decode_step`, the compiled
    functions `grok-mini generate` runs (jit, cache donated); with through_stream also `generate.stream`
    itself, which runs the same decode_step and hands each token to the host."""
    graphdef, state = nnx.split(model)
    sampler = Sampler.argmax(batch)
    rng = np.random.default_rng(seed)
    prompt = rng.integers(3, config.vocab_size, (batch, prompt_len), dtype=np.int32)
    tokens, lengths = shard_tokens(prompt, mesh), jnp.full((batch,), prompt_len, jnp.int32)

    def fresh_prefill():  # a new cache each time: prefill donates (consumes) it
        cache = shard_cache(model.init_cache(batch, cache_len), mesh)
        jax.block_until_ready(cache)
        return measure.timed(lambda: prefill(graphdef, state, tokens, lengths, cache, sampler))

    first_s, _ = fresh_prefill()
    report.add("compile prefill (+1 run)", f"{first_s:.1f} s")
    prefill_s, _ = fresh_prefill()
    again_s, (token, cache) = fresh_prefill()  # this one's token and cache start the decode
    prefill_s = min(prefill_s, again_s)
    report.add("prefill", f"{batch * prompt_len / prefill_s:,.0f} tokens/s",
               f"batch {batch} × {prompt_len} tokens in {prefill_s * 1e3:,.1f} ms (best of 2 after a warm-up)")

    position = 0  # decode steps taken: decode_step's `step` argument (1, 2, ...)

    def decode(n: int) -> jax.Array:  # n steps back to back, each fed the token the last one chose
        nonlocal token, cache, position
        for _ in range(n):
            position += 1
            token, cache = decode_step(graphdef, state, token, cache, sampler, position)
        return token

    # The first call compiles; the second may compile once more for the layout XLA chose for the returned cache.
    report.add("compile decode (+2 steps)", f"{measure.timed(lambda: decode(2))[0]:.1f} s")
    decode_s = measure.timed(lambda: decode(steps))[0] / steps
    if profile is not None:
        trace_dir = Path(tempfile.mkdtemp(prefix="grok-decode-trace-"))  # large: kept out of the report's folder
        with jax.profiler.trace(str(trace_dir)):
            jax.block_until_ready(decode(PROFILE_STEPS))
        Path(profile).write_text(device_time_by_kernel(trace_dir, steps=PROFILE_STEPS))
        # The compiled step beside it, to find what a kernel name in the table computes.
        hlo = decode_step.lower(graphdef, state, token, cache, sampler, position).compile().as_text()
        Path(profile).with_suffix(".hlo.txt").write_text(hlo)
    timing = {"prefill_s": prefill_s, "decode_s": decode_s}
    if through_stream:
        for _ in range(2):  # the first pass compiles stream's own shapes (its cache is sized in buckets)
            timing["stream_s"] = measure.seconds_per_item(stream(model, prompt, steps + 1))
    return timing


def device_time_by_kernel(trace_dir: Path, steps: int, top: int = 30) -> str:
    """Markdown: the first GPU's timelines in a jax.profiler trace, and its kernels by total time per step."""
    data = jax.profiler.ProfileData.from_file(str(sorted(Path(trace_dir).rglob("*.xplane.pb"))[-1]))
    planes = [plane for plane in data.planes if plane.name.startswith("/device:GPU:0")]
    if not planes:
        return "no GPU plane in the trace; planes: " + ", ".join(plane.name for plane in data.planes) + "\n"
    lines = [f"# Decode, device time on {planes[0].name} over {steps} steps", "",
             "| timeline | events | busy ms per step | span ms per step |", "| --- | ---: | ---: | ---: |"]
    by_kernel = {}
    for line in planes[0].lines:
        events = list(line.events)
        if not events:
            continue
        busy = sum(e.duration_ns for e in events)
        span = max(e.start_ns + e.duration_ns for e in events) - min(e.start_ns for e in events)
        lines.append(f"| {line.name} | {len(events)} | {busy / steps / 1e6:.2f} | {span / steps / 1e6:.2f} |")
        if line.name.startswith("Stream"):  # the kernels as the GPU ran them
            for e in events:
                by_kernel[e.name] = by_kernel.get(e.name, 0) + e.duration_ns
    lines += ["", "| kernel (stream timelines) | ms per step |", "| --- | ---: |"]
    for name, ns in sorted(by_kernel.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"| {name[:100]} | {ns / steps / 1e6:.3f} |")
    return "\n".join(lines) + "\n"


def cache_length(prompt_len: int, steps: int) -> int:
    """KV-cache positions for a prompt, the warm-up, timed and traced decode steps, in whole buckets."""
    return -(-(prompt_len + 2 + steps + PROFILE_STEPS) // BUCKET) * BUCKET


def hold_embedding(model, dtype: str) -> None:
    """Hold the tied embedding in `dtype`, in place (Grok's embedding_dtype: the logits stay the same).

    Back to float32 from bfloat16 it holds the rounded values, which are all the model uses of it: the
    same logits, and the same bytes a step reads, as the release's float32."""
    value = model.in_out_embed.get_value()
    if value.dtype != jnp.dtype(dtype):
        model.in_out_embed.set_value(value.astype(dtype))
        del value
        gc.collect()


def sweep(model, mesh, config: GrokConfig, args, bandwidth, prompt_len: int, steps: int, report: Report,
          embeddings: list[str]) -> None:
    """Prefill and decode at every batch size of --batches with the embedding held each way, in one table.

    The bound of a step is the weights the batch reads (the experts at their expected use,
    measure.decode_bytes) plus the KV cache, at the copy bandwidth measured in this run.
    """
    rows = ["| embedding | batch × prompt | prefill tokens/s | decode ms/step | tokens/s | bytes a step reads | "
            "bound ms | × bound |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for embedding in embeddings:
        hold_embedding(model, embedding)
        for batch in args.batches or [args.batch]:
            cache_len = cache_length(prompt_len, steps)
            read = measure.decode_bytes(model, shard_cache(model.init_cache(batch, cache_len), mesh), batch=batch)
            try:
                timing = run_model(model, mesh, config, batch, prompt_len, steps, cache_len, report, args.seed)
            except Exception as error:  # an OOM at one size should leave the others
                first_line = str(error).splitlines()[0][:200]
                report.note(f"{embedding}, batch {batch}: failed: {type(error).__name__}: {first_line}")
                continue
            decode_s = timing["decode_s"]
            rows.append(f"| {embedding} | {batch} × {prompt_len} | {batch * prompt_len / timing['prefill_s']:,.0f} | "
                        f"{decode_s * 1e3:,.2f} | {batch / decode_s:,.0f} | {gb(read.batch_read)} | "
                        f"{measure.bound_seconds(read.batch_read, bandwidth) * 1e3:,.2f} | "
                        f"{measure.times_bound(decode_s, read.batch_read, bandwidth):,.2f} |")
            log(rows[-1])
            report.section("Batch sweep (generate.prefill and generate.decode_step)", rows)
            if args.compare_scan and batch > moe.ALL_EXPERTS_TOKENS and embedding == embeddings[-1]:
                # The path these sizes took before they had a decode path of their own: the tiles' scan.
                model.set_attributes(int8_kernel=False)
                scan_s = run_model(model, mesh, config, batch, prompt_len, steps, cache_len, report,
                                   args.seed)["decode_s"]
                model.set_attributes(int8_kernel=None)
                rows.append(f"| {embedding}, MoE by the scan | {batch} × {prompt_len} | | {scan_s * 1e3:,.2f} | "
                            f"{batch / scan_s:,.0f} | {gb(read.batch_read)} | | "
                            f"{measure.times_bound(scan_s, read.batch_read, bandwidth):,.2f} |")
                report.section("Batch sweep (generate.prefill and generate.decode_step)", rows)


def measure_int4(args, config, mesh, devices, bandwidth, cache_len: int, prompt_len: int, steps: int,
                 report: Report) -> float | None:
    """Load the checkpoint again with int4 experts (re-quantised on the devices) and time decode: seconds/token."""
    quantized = Int4(args.int4)
    start = time.perf_counter()
    options = {"dispatch": args.dispatch} if args.dispatch else {}
    model = load_checkpoint(args.dir, config, dtype=jnp.bfloat16, quantized=quantized, mesh=mesh, **options)
    jax.block_until_ready(nnx.state(model))
    report.add(f"load, int4 experts (groups of {args.int4})", f"{time.perf_counter() - start:,.1f} s",
               "int8 slices placed, then re-quantised on the devices")
    in_use = [device_memory(d).get("bytes_in_use") for d in devices]
    if all(in_use):
        report.add("memory per device after int4 load", f"{gb(min(in_use))} – {gb(max(in_use))}")
    read = measure.decode_bytes(model, shard_cache(model.init_cache(args.batch, cache_len), mesh))
    report.add("int4: weights on device 0", gb(read.weights), f"a token uses {gb(read.token_weights)} of them; "
               f"config.weight_bytes('int4') {gb(config.weight_bytes('int4', group_size=args.int4))} in all")
    try:
        timing = run_model(model, mesh, config, args.batch, prompt_len, steps, cache_len, report, args.seed)
    except Exception as error:
        report.note(f"int4 prefill/decode failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
        return None
    decode_s = timing["decode_s"]
    report.add("decode, int4 experts", f"{decode_s * 1e3:,.2f} ms/token",
               f"{measure.times_bound(decode_s, read.token_read, bandwidth):,.2f}× the bound for the weights a token "
               f"uses ({gb(read.token_read)} / {bandwidth.bytes_per_second / GB:,.1f} GB/s)")
    return decode_s


# ---- main -------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> None:
    devices = jax.devices()
    kind = devices[0].device_kind
    report = Report(args.out, f"Grok-1 at scale on {len(devices)} × {kind}" + (" (smoke)" if args.smoke else ""))
    report.note(f"command: `python benchmarks/gpu_scale.py {' '.join(sys.argv[1:])}`")
    report.note(measure.environment())
    report.add("devices", f"{len(devices)} × {kind}", f"{jax.process_count()} process(es)")
    sizes = [int(s) for s in args.mesh.split(",")] if args.mesh else None
    mesh = make_mesh(data=sizes[0], expert=sizes[1], model=sizes[2]) if sizes else make_mesh()
    report.add("mesh", " × ".join(f"{k}={v}" for k, v in mesh.shape.items()))
    limits = [device_memory(d).get("bytes_limit") for d in devices]
    limit = min(limits) if all(limits) else None
    report.add("memory per device (JAX limit)", gb(limit))
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0] if Path("/proc/meminfo").exists() else "n/a"
    report.add("host RAM", meminfo.replace("MemTotal:", "").strip())

    # 1. bandwidth
    bandwidth = measure.copy_bandwidth(mesh)
    report.add("copy bandwidth per device", f"{bandwidth.bytes_per_second / GB:,.1f} GB/s",
               f"{bandwidth}; the bound of every × below")

    # 2. how many layers
    base = SMOKE if args.smoke else preset("grok-1")
    n = len(devices)
    per_layer = layer_bytes(base)
    reserve = args.reserve_gib * GiB
    embedding = 4 * base.vocab_size * base.emb_size
    if args.layers != "auto":
        layers = int(args.layers)
    elif args.smoke or limit is None:
        layers = base.num_layers
    else:
        layers = int((n * (limit - reserve) - embedding) // per_layer)
        layers = max(1, min(64, layers))
    config = dataclasses.replace(base, num_layers=layers)
    report.add("layers", f"{layers} of 64" if not args.smoke else f"{layers} (smoke config)",
               f"{gb(per_layer)} int8 each; reserve {gb(reserve)} per device")
    report.add("checkpoint (int8 release format)", gb(config.weight_bytes("int8")),
               f"full Grok-1: {gb(preset('grok-1').weight_bytes('int8'))}")

    # 3. write
    stat = os.statvfs(args.dir if args.dir.exists() else args.dir.parent)
    log(f"disk free at {args.dir}: {gb(stat.f_bavail * stat.f_frsize)}; writing layer 0 + embedding")
    layout = release_layout(config)  # traces the model's shapes: done once
    written = write_checkpoint(config, layout, args.dir, args.seed)
    if written["written_bytes"]:
        report.add("write (unique files)", f"{gb(written['written_bytes'])} in {written['seconds']:.1f} s",
                   "other layers are hard links to layer 0")

    # 4. cold read of one expert file
    expert_file = next(t for t in layout if t.path.endswith("decoder_layer_0/moe/linear/w"))
    speed = cold_read_speed(args.dir / CHECKPOINT_DIR / expert_file.filename)
    if speed:
        report.add("disk cold read", f"{speed / GB:,.2f} GB/s", f"one expert file; the full checkpoint would take "
                   f"≥ {preset('grok-1').weight_bytes('int8') / speed / 60:,.1f} min to read at this speed")

    # 5. load
    gc.collect()
    rss_before = proc_status("VmRSS")
    peak_reset = reset_peak_rss()
    start = time.perf_counter()
    options = {"dispatch": args.dispatch} if args.dispatch else {}  # the model's own options, at construction
    model = load_checkpoint(args.dir, config, dtype=jnp.bfloat16, quantized=True, mesh=mesh, **options)
    jax.block_until_ready(nnx.state(model))
    load_s = time.perf_counter() - start
    checkpoint_bytes = config.weight_bytes("int8")
    report.add("load", f"{load_s:,.1f} s", f"{checkpoint_bytes / load_s / GB:,.2f} GB/s from the page cache "
               f"(mapped files → slices → devices)")
    peak = proc_status("VmHWM")
    if peak_reset and peak and rss_before:
        largest = max(math.prod(t.shape) * (4 if t.blocks is None else 1) for t in layout)
        report.add("host RAM peak during load", gb(peak - rss_before),
                   f"growth of resident memory over {gb(rss_before)} before (incl. mapped file pages"
                   f"{'; on CPU devices the model itself too' if jax.default_backend() == 'cpu' else ''}); "
                   f"largest tensor {gb(largest)}")
    after = proc_status("VmRSS")
    if after and rss_before:
        report.add("host RAM after load", gb(after - rss_before), "growth of resident memory that stayed")
    in_use = [device_memory(d).get("bytes_in_use") for d in devices]
    if all(in_use):
        report.add("memory per device after load", f"{gb(min(in_use))} – {gb(max(in_use))}")
    dispatch = model.decoder_layers[0].moe.dispatch
    report.add("MoE dispatch", dispatch)
    held = "float32" if args.embedding == "float32" else "bfloat16"  # bfloat16: as `grok-mini generate` holds it
    hold_embedding(model, held)
    report.add("embedding held in", held, "the tied [V, D] matrix; the model uses it in bfloat16 either way")
    # 6. speed
    prompt_len = args.prompt_len or (16 if args.smoke else 256)
    steps = args.decode_steps or (8 if args.smoke else 32)
    cache_len = cache_length(prompt_len, steps)
    read = measure.decode_bytes(model, shard_cache(model.init_cache(args.batch, cache_len), mesh))
    report.add("weights on device 0", gb(read.weights), f"a token uses {gb(read.token_weights)} of them "
               f"(2 of 8 experts); a decode step also reads the KV cache, {gb(read.cache)} ({cache_len} positions)")
    try:
        timing = run_model(model, mesh, config, args.batch, prompt_len, steps, cache_len, report, args.seed,
                           args.profile, through_stream=True)
    except Exception as error:  # an OOM should still leave the load numbers in the report
        report.note(f"prefill/decode failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
        return
    decode_s = timing["decode_s"]
    decode_ms = decode_s * 1e3
    per_second = bandwidth.bytes_per_second / GB
    report.add("decode", f"{decode_ms:,.2f} ms/token", f"batch {args.batch}; {args.batch / decode_s:,.1f} "
               f"tokens/s; {steps} steps of generate.decode_step back to back")
    report.add("decode through generate.stream", f"{timing['stream_s'] * 1e3:,.2f} ms/token",
               "what `grok-mini generate` runs: the same decode_step, each token handed to the host before the next "
               f"step; {timing['stream_s'] / decode_s:,.2f}× the back-to-back time")
    report.add("decode bound, all weights on a device", f"{measure.bound_seconds(read.all_read, bandwidth) * 1e3:,.2f} "
               f"ms/token", f"{gb(read.all_read)} (weights + KV cache) / {per_second:,.1f} GB/s; measured is "
               f"{measure.times_bound(decode_s, read.all_read, bandwidth):,.2f}× this")
    report.add("decode bound, weights a token uses", f"{measure.bound_seconds(read.token_read, bandwidth) * 1e3:,.2f} "
               f"ms/token", f"{gb(read.token_read)} (weights + KV cache) / {per_second:,.1f} GB/s; measured is "
               f"{measure.times_bound(decode_s, read.token_read, bandwidth):,.2f}× this")
    if args.embedding == "both" or args.batches:
        sweep(model, mesh, config, args, bandwidth, prompt_len, steps, report,
              ["float32", "bfloat16"] if args.embedding == "both" else [args.embedding])
    if args.compare_scan:
        # The same weights with the other decode path: switched in place (Flax's set_attributes), since a
        # second model would need the GPUs' memory twice.
        model.set_attributes(int8_kernel=False)
        scan_s = run_model(model, mesh, config, args.batch, prompt_len, steps, cache_len, report,
                           args.seed)["decode_s"]
        report.add("decode, MoE by the tiles' scan (int8_kernel=False)", f"{scan_s * 1e3:,.2f} ms/token",
                   f"{measure.times_bound(scan_s, read.token_read, bandwidth):,.2f}× the bound for the weights a "
                   f"token uses; the default takes {decode_s / scan_s:,.2f}× this time")
    if args.int4:
        del model
        gc.collect()
        int4_decode_s = measure_int4(args, config, mesh, devices, bandwidth, cache_len, prompt_len, steps, report)
        if int4_decode_s:
            report.add("decode int4 ÷ int8", f"{int4_decode_s / decode_s:,.2f}×", "same run, same checkpoint, "
                       "same prompt; generate.decode_step back to back")
    if not args.smoke and layers < 64:
        report.note(f"64 layers on the same GPUs would scale decode to about {decode_ms * 64 / layers:,.0f} ms/token "
                    "(linear in layers; the embedding's share is small), if they fit.")
    for d, stats in zip(devices, (device_memory(d) for d in devices), strict=True):
        if stats.get("peak_bytes_in_use"):
            report.note(f"{d}: peak {gb(stats['peak_bytes_in_use'])} of {gb(stats.get('bytes_limit'))}")
    log(f"done; report in {args.out}")


if __name__ == "__main__":
    main(ARGS)
