"""Release tensor files written by an attacker: arrays built from allowed globals only.

Each crafted file names nothing but numpy's array rebuilder, `numpy.dtype`, `ml_dtypes.bfloat16`
and `QuantizedWeight8bit`, the globals a genuine file uses, and yet would, through Python's
unpickler, give numpy an object array of raw pointers, a dtype that reads outside its buffer or
dtype state that rewrites numpy's own float32. The reader must refuse each with a CheckpointError
naming the file, without crashing, hanging or allocating what the file claims.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys

import hypothesis.strategies as st
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from grok_mini import load_checkpoint
from grok_mini.checkpoint import CheckpointError, _pickle_release, read_tensor
from grok_mini.quant import QuantizedWeight8bit
from grok_mini.tensor_pickle import DTYPES
from tests.conftest import FIXTURE
from tests.hostile.conftest import MiB, refused_cleanly, run_isolated

_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
FLOAT32_STATE = np.dtype("f4").__reduce__()[2]  # (3, '<', None, None, None, -1, -1, 0)


class Dtype:
    """Pickles as numpy.dtype(spec, False, True) followed by BUILD(state): any spec, any state."""

    def __init__(self, spec, state=FLOAT32_STATE):
        self.spec, self.state = spec, state

    def __reduce__(self):
        return np.dtype, (self.spec, False, True), self.state


class Array:
    """Pickles as numpy's _reconstruct(ndarray, (0,), b'b') followed by BUILD((1, shape, dtype, fortran, data))."""

    def __init__(self, shape, dtype, data, fortran=False):
        self.state = (1, tuple(shape), dtype, fortran, data)

    def __reduce__(self):
        return _reconstruct, (np.ndarray, (0,), b"b"), self.state


def crafted(value) -> bytes:
    return _pickle_release(value)  # QuantizedWeight8bit under __main__, as the release writes it


POINTERS = Array((8,), Dtype("O8", (3, "|", None, None, None, -1, -1, 0)), b"\x41" * 64)  # flags 0: no list pickle
# A structured dtype: one float32 field at offset 1 << 20, far outside the 8-byte buffer it describes.
OUTSIDE = Array((2,), Dtype("V4", (3, "|", None, ("x",), {"x": (np.dtype("f4"), 1 << 20)}, 4, 1, 16)), b"\0" * 8)


def tree_digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*")) if not p.is_fifo()}


# ---- memory safety: arrays numpy would build wrongly --------------------------------------------

def test_pointer_array_is_refused_where_a_restricted_unpickler_crashes(tmp_path):
    path = tmp_path / "tensor00001_000"
    path.write_bytes(crafted(POINTERS))
    ours = run_isolated(f"""
        from grok_mini.checkpoint import CheckpointError, read_tensor
        try:
            read_tensor({str(path)!r})
        except CheckpointError as error:
            assert "dtype 'O8'" in str(error) and {str(path)!r} in str(error), error
            print("REFUSED")
    """)
    assert refused_cleanly(ours), ours
    # The control: the same file through pickle with an allow-list of the same four globals (the
    # previous reader) dies dereferencing 0x4141414141414141, so the file really is hostile.
    control = run_isolated(f"""
        import pickle, numpy as np
        allowed = {{("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
                    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}}
        class Restricted(pickle.Unpickler):
            def find_class(self, module, name):
                return allowed[(module, name)]
        with open({str(path)!r}, "rb") as file:
            value = Restricted(file).load()
        print(value.dtype, value[0])  # reading an item follows its "pointer"
        print("SURVIVED")
    """)
    assert control.signal == "SIGSEGV", control


@pytest.mark.parametrize("value, expected", [
    (OUTSIDE, "dtype 'V4'"),
    # float32 by name, but with fields at offsets outside the buffer in its state
    (Array((2,), Dtype("f4", (3, "<", None, ("x",), {"x": (np.dtype("f4"), 1 << 20)}, 4, 1, 16)), b"\0" * 8),
     "unexpected state"),
    (Array((2,), Dtype("f4", (3, ">", None, None, None, -1, -1, 0)), b"\0" * 8), "unexpected state"),  # big-endian
    (Array((2,), Dtype("f4", (3, "<", (np.dtype("f4"), (4,)), None, None, -1, -1, 0)), b"\0" * 8), "unexpected state"),
    (Array((2,), Dtype("f4", (3, "<", None, None, None, 1 << 20, 1, 0)), b"\0" * 8), "unexpected state"),  # elsize
    (Array((2,), Dtype(">f4"), b"\0" * 8), "dtype '>f4'"),
    (Array((2,), Dtype("U2"), b"\0" * 16), "dtype 'U2'"),
    (Array((2,), Dtype("S4"), b"\0" * 8), "dtype 'S4'"),
    (Array((2,), Dtype("M8[s]"), b"\0" * 16), "dtype 'M8[s]'"),
    (Array((2,), Dtype("c8"), b"\0" * 16), "dtype 'c8'"),
    (Array((2,), Dtype("f4"), [1.0, 2.0]), "opcode b']'"),  # object arrays pickle their items as a list
])
def test_dtypes_that_are_not_plain_numbers_are_refused(tmp_path, value, expected):
    path = tmp_path / "tensor"
    path.write_bytes(crafted(value))
    with pytest.raises(CheckpointError, match="not a readable tensor pickle") as error:
        read_tensor(path)
    assert expected in str(error.value) and str(path) in str(error.value)


def test_dtype_state_cannot_change_numpys_float32(tmp_path):
    """Only the state numpy itself writes is accepted, and even that is never applied to numpy's dtype."""
    before = (np.dtype("f4").byteorder, np.dtype("f4").flags, np.dtype("f4").itemsize)
    path = tmp_path / "tensor"
    path.write_bytes(crafted(Array((3,), Dtype("f4", (3, "<", None, None, None, -1, -1, 0xFF)),
                                   np.arange(3, dtype="<f4").tobytes())))
    value = read_tensor(path)  # odd flags alone are harmless: the dtype is ours, not built from the state
    np.testing.assert_array_equal(value, [0, 1, 2])
    assert (np.dtype("f4").byteorder, np.dtype("f4").flags, np.dtype("f4").itemsize) == before
    assert np.array([1.5], np.float32).tobytes() == b"\x00\x00\xc0\x3f"


def test_shape_and_bytes_must_agree(tmp_path):
    cases = {"short": Array((300_000_000,), Dtype("f4"), b"\0" * 512),  # claims 1.2 GB, gives 512 bytes
             "long": Array((2,), Dtype("f4"), b"\0" * 12),
             "negative": Array((-1,), Dtype("f4"), b""),
             "bool dims": Array((True, 2), Dtype("f4"), b"\0" * 8),
             "float dims": Array((2.0,), Dtype("f4"), b"\0" * 8),
             "deep": Array((1,) * 40, Dtype("f4"), b"\0" * 4),
             "not a tuple": Array((2,), Dtype("f4"), b"\0" * 8)}
    cases["not a tuple"].state = "nonsense"
    for name, value in cases.items():
        path = tmp_path / name.replace(" ", "_")
        path.write_bytes(crafted(value))
        with pytest.raises(CheckpointError, match=f"{path}: not a readable tensor pickle"):
            read_tensor(path)


@pytest.mark.parametrize("scales", ["nan", None, [1.0], Array((1, 4), Dtype("O8", (3, "|", None, None, None, -1,
                                                                                   -1, 63)), b"A" * 32)])
def test_scales_that_are_not_arrays(tmp_path, scales):
    path = tmp_path / "tensor"
    path.write_bytes(crafted(QuantizedWeight8bit(weight=np.zeros((4, 4), np.int8), scales=scales)))
    with pytest.raises(CheckpointError, match=f"{path}: not a readable tensor pickle"):
        read_tensor(path)


def test_the_same_object_cannot_be_built_twice(tmp_path):
    """BUILD on an array already built (through the memo) would change an array another part holds."""
    data = bytearray(crafted(np.zeros(2, np.float32)))
    assert data[-2:] == b"b."
    # re-push the finished array (memo 9 is the REDUCE result in pickle.dumps' numbering) and build it again
    data[-1:] = b"h\x09(K\x01K\x02\x85h\x0c\x89C\x08" + b"\0" * 8 + b"tb."
    path = tmp_path / "twice"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not a readable tensor pickle"):
        read_tensor(path)


# ---- memory bombs and hangs ------------------------------------------------------------------------

def _bombs(tmp_path) -> dict[str, bytes]:
    header = b"\x80\x04"
    return {
        "claims 1.2 GB": crafted(Array((300_000_000,), Dtype("f4"), b"\0" * 512)),
        "bytes8 of 1 TB": header + b"\x8e" + (1 << 40).to_bytes(8, "little") + b"x" * 64,
        "frame of 1 TB": header + b"\x95" + (1 << 40).to_bytes(8, "little") + b"N.",
        "memo flood": header + b"N" + b"\x94" * 2_000_000 + b".",
        "mark flood": header + b"(" * 2_000_000 + b".",
        "stack flood": header + b"N" * 2_000_000 + b".",
        "get flood": header + b"N\x94" + b"h\x00" * 1_000_000 + b".",
        "unicode of 4 GB": header + b"X" + (0xFFFFFFFF).to_bytes(4, "little") + b"a" * 100,
    }


def test_memory_bombs_are_refused_in_bounded_memory(tmp_path):
    files = {}
    for name, data in _bombs(tmp_path).items():
        files[name] = tmp_path / name.replace(" ", "_")
        files[name].write_bytes(data)
    outcome = run_isolated(f"""
        import resource
        from grok_mini.checkpoint import CheckpointError, read_tensor
        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = peak()
        for name, path in {[(n, str(p)) for n, p in files.items()]!r}:
            try:
                read_tensor(path)
                print("LOADED", name)
            except CheckpointError as error:
                assert path in str(error), error
        print("REFUSED", peak() - start)
    """, address_space=4 << 30)
    assert refused_cleanly(outcome), outcome
    largest = max(len(data) for data in _bombs(tmp_path).values())
    grown = int(outcome.stdout.split("REFUSED")[1])
    assert grown < 4 * largest + 32 * MiB, f"memory grew {grown / MiB:.0f} MiB, files up to {largest / MiB:.0f} MiB"


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "folder"])
def test_a_tensor_file_that_is_not_a_regular_file_is_refused_without_blocking(checkpoint, tmp_path, kind):
    target = checkpoint / "ckpt-0" / "tensor00005_000"
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
    elif kind == "device":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
    for mesh in ("None", "grok_mini.make_mesh()"):
        outcome = run_isolated(f"""
            import grok_mini
            from grok_mini import CheckpointError, GrokConfig, load_checkpoint
            config = GrokConfig.from_json({str(FIXTURE / "config.json")!r})
            try:
                load_checkpoint({str(checkpoint)!r}, config, mesh={mesh})
            except CheckpointError as error:
                assert "tensor00005_000" in str(error) and "regular file" in str(error), error
                print("REFUSED")
        """, timeout=20)
        assert refused_cleanly(outcome), outcome


def test_a_symlink_to_a_regular_file_is_read(checkpoint, fixture_config, reference):
    """The Hugging Face cache links each file to a blob: that must keep working."""
    target = checkpoint / "ckpt-0" / "tensor00005_000"
    blob = checkpoint / "blob"
    target.rename(blob)
    target.symlink_to(blob)
    model = load_checkpoint(checkpoint, fixture_config, dtype=jnp.float32)
    assert model.decoder_layers[0].multi_head_attention.value.w.shape == (128, 64)


# ---- silent wrong models: non-finite weights ------------------------------------------------------

@pytest.mark.parametrize("index, parameter, damage", [
    (1, "language_model/rms_norm/scale", "nan"),
    (0, "language_model/in_out_embed/embeddings", "inf"),
    (3, "decoder_layer_0/moe/linear_1/w: scales", "nan scales"),
    (13, "decoder_layer_0/router/w", "-inf"),
])
def test_non_finite_weights_are_refused_unless_asked(checkpoint, fixture_config, index, parameter, damage):
    target = checkpoint / "ckpt-0" / f"tensor{index:05d}_000"
    value = read_tensor(target)
    if isinstance(value, QuantizedWeight8bit):
        scales = np.array(value.scales)
        scales[0, -1, 3] = np.nan
        value = QuantizedWeight8bit(weight=np.array(value.weight), scales=scales.astype(ml_dtypes.bfloat16))
    else:
        value = np.array(value)
        value.reshape(-1)[7] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[damage]
    target.write_bytes(_pickle_release(value))
    with pytest.raises(CheckpointError, match="NaN or infinite") as error:
        load_checkpoint(checkpoint, fixture_config, dtype=jnp.float32)
    assert str(target) in str(error.value) and parameter in str(error.value)
    model = load_checkpoint(checkpoint, fixture_config, dtype=jnp.float32, check_finite=False)
    assert model.config == fixture_config


def test_non_finite_weights_are_refused_on_a_mesh(checkpoint):
    target = checkpoint / "ckpt-0" / "tensor00001_000"
    value = np.array(read_tensor(target))
    value[0] = np.nan
    target.write_bytes(_pickle_release(value))
    outcome = run_isolated(f"""
        import grok_mini
        from grok_mini import CheckpointError, GrokConfig, load_checkpoint
        config = GrokConfig.from_json({str(FIXTURE / "config.json")!r})
        try:
            load_checkpoint({str(checkpoint)!r}, config, mesh=grok_mini.make_mesh())
        except CheckpointError as error:
            assert "rms_norm/scale: holds NaN" in str(error), error
            print("REFUSED")
    """, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert refused_cleanly(outcome), outcome


# ---- through the command line ---------------------------------------------------------------------

@pytest.mark.parametrize("hostile", [POINTERS, OUTSIDE])
def test_cli_reports_a_crafted_array_in_one_line(checkpoint, hostile):
    target = checkpoint / "ckpt-0" / "tensor00001_000"
    target.write_bytes(crafted(hostile))
    result = subprocess.run([sys.executable, "-m", "grok_mini.cli", "generate", str(checkpoint),
                             "--config", str(FIXTURE / "config.json"), "--ids", "1,2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grok-mini generate: error:") and "tensor00001_000" in lines[0]


# ---- fuzzing: mutations of genuine files ----------------------------------------------------------

def _genuine_files() -> list[bytes]:
    rng = np.random.default_rng(0)
    quantized = QuantizedWeight8bit(weight=rng.integers(-127, 128, (2, 8, 6), dtype=np.int8),
                                    scales=rng.random((2, 2, 6), np.float32).astype(ml_dtypes.bfloat16))
    return [_pickle_release(quantized), _pickle_release(rng.standard_normal((5, 3), np.float32)),
            (FIXTURE / "ckpt-0" / "tensor00001_000").read_bytes()]


GENUINE = _genuine_files()


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, byte) edits: 0 overwrites a byte, 1 inserts one, 2 deletes one, 3 truncates."""
    data = bytearray(data)
    for kind, position, byte in edits:
        at = position % (len(data) + 1)
        if kind == 0 and at < len(data):
            data[at] = byte
        elif kind == 1:
            data.insert(at, byte)
        elif kind == 2 and at < len(data):
            del data[at]
        elif kind == 3:
            del data[at:]
    return bytes(data)


EDITS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, len(GENUINE) - 1), edits=EDITS)
def test_mutated_files_load_or_are_refused_never_anything_else(tmp_path, which, edits):
    path = tmp_path / "mutated"
    path.write_bytes(_mutate(GENUINE[which], edits))
    try:
        value = read_tensor(path)
    except CheckpointError as error:
        assert str(path) in str(error)
        return
    arrays = [value.weight, value.scales] if isinstance(value, QuantizedWeight8bit) else [value]
    for array in arrays:  # what loads is a plain array over exactly the file's bytes
        assert isinstance(array, np.ndarray) and array.dtype in DTYPES.values() and array.dtype.fields is None
        assert array.nbytes <= path.stat().st_size


def test_mutated_files_never_crash_hang_or_bloat_a_separate_interpreter(tmp_path):
    """The same mutations, 400 files, read in one subprocess under a memory limit and a time limit."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "mutants"
    folder.mkdir()
    for i in range(400):
        edits = [(int(rng.integers(4)), int(rng.integers(1 << 20)), int(rng.integers(256)))
                 for _ in range(int(rng.integers(1, 6)))]
        (folder / f"m{i:03d}").write_bytes(_mutate(GENUINE[i % len(GENUINE)], edits))
    before = tree_digest(tmp_path)
    outcome = run_isolated(f"""
        import pathlib
        from grok_mini.checkpoint import CheckpointError, read_tensor
        loaded = refused = 0
        for path in sorted(pathlib.Path({str(folder)!r}).iterdir()):
            for mapped in (False, True):
                try:
                    read_tensor(path, mapped=mapped)
                    loaded += 1
                except CheckpointError:
                    refused += 1
        print("REFUSED", loaded, refused)
    """, timeout=60, address_space=4 << 30)
    assert refused_cleanly(outcome), outcome
    loaded, refused = map(int, outcome.stdout.split("REFUSED")[1].split())
    assert loaded + refused == 800 and refused > 400  # most mutations break the file; none breaks the reader
    assert outcome.peak_rss < 1 << 30
    assert tree_digest(tmp_path) == before  # reading changed nothing on disk
