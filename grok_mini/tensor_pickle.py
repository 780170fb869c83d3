"""The release's tensor files, read without unpickling them.

Each file of the release is a pickle of one numpy array or of `__main__.QuantizedWeight8bit(weight,
scales)`. Python's unpickler, even restricted to numpy's own globals, lets the file hand numpy an
object dtype whose bytes are raw pointers, a structured dtype whose fields point outside the
buffer, or dtype state that changes numpy's float32 for the whole process. So nothing here calls
numpy's unpickling: `read_pickled_tensor` interprets the handful of pickle opcodes these files use
on a stack of plain Python values, accepts only the recipe "rebuild an ndarray of a plain numeric
dtype from these bytes", and then makes the array itself with `np.frombuffer` (or a read-only
memory map of the file) once shape × itemsize equals the length of the bytes.

Every length is checked against what is left of the file before anything is read, and the memo,
the stack and the number of opcodes are capped, so memory stays near the file's size whatever the
file claims. Anything unexpected is a `CheckpointError` naming the file and the byte offset.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from grok_mini.files import FileRefusedError, open_regular
from grok_mini.quant import QuantizedWeight8bit

__all__ = ["CheckpointError", "DTYPES", "read_pickled_tensor"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as the given config: names the file and the parameter."""


# The dtypes a release file may hold: numbers only, no objects, fields, strings or subarrays.
DTYPES: dict[object, np.dtype] = {name: np.dtype(name) for name in
                                  ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1")}
_BFLOAT16 = "ml_dtypes.bfloat16"
DTYPES[_BFLOAT16] = np.dtype(ml_dtypes.bfloat16)

# Globals a release file names, and the token each stands for on our stack (never the real object).
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",  # numpy 1.x pickles (the release)
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",  # numpy 2.x pickles
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("ml_dtypes", "bfloat16"): _BFLOAT16,
    ("__main__", "QuantizedWeight8bit"): "QuantizedWeight8bit",
    ("grok_mini.quant", "QuantizedWeight8bit"): "QuantizedWeight8bit",
}

MAP_AT_LEAST = 1 << 16  # with mapped=True, byte strings this long stay on disk as memory maps
_MAX_OPCODES = 100_000  # a release file has about a hundred
_MAX_MEMO = _MAX_STACK = 1_000
_MAX_DIMS = 8


@dataclasses.dataclass(eq=False)
class _Dtype:
    """`numpy.dtype(spec, False, True)` on the stack; `state` is set by BUILD (and only checked)."""

    spec: object
    state: tuple | None = None


@dataclasses.dataclass(eq=False)
class _Array:
    """`_reconstruct(ndarray, (0,), b'b')` on the stack; BUILD gives it (1, shape, dtype, fortran, data)."""

    array: np.ndarray | None = None


@dataclasses.dataclass(eq=False)
class _Quantized:
    """`QuantizedWeight8bit.__new__()` on the stack; BUILD gives it {'weight': ..., 'scales': ...}."""

    value: QuantizedWeight8bit | None = None


@dataclasses.dataclass(frozen=True)
class _OnDisk:
    """A byte string left in the file (mapped reads): where it starts and how long it is."""

    offset: int
    size: int


_MARK = object()


class _Reader:
    """One pass over the opcodes of one file."""

    def __init__(self, file, source: Path, size: int, mapped: bool):
        self.file, self.source, self.size, self.mapped = file, source, size, mapped
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}

    # ---- bytes of the file ----

    def fail(self, message: str):
        raise CheckpointError(f"{self.source}: not a readable tensor pickle: {message} (at byte {self.file.tell()})")

    def read(self, n: int) -> bytes:
        if n > self.size - self.file.tell():
            self.fail(f"a length of {n} bytes runs past the end of the {self.size}-byte file")
        return self.file.read(n)

    def unsigned(self, n: int) -> int:
        return int.from_bytes(self.read(n), "little")

    def data(self, n: int):
        """A byte string of length n: read, or with mapped=True and n large, left on disk."""
        if self.mapped and n >= MAP_AT_LEAST:
            offset = self.file.tell()
            if n > self.size - offset:
                self.fail(f"a length of {n} bytes runs past the end of the {self.size}-byte file")
            self.file.seek(n, os.SEEK_CUR)
            return _OnDisk(offset, n)
        return self.read(n)

    def text(self, n: int) -> str:
        try:
            return self.read(n).decode("utf-8")
        except UnicodeDecodeError:
            self.fail("a string that is not UTF-8")

    # ---- the stack ----

    def push(self, value) -> None:
        if len(self.stack) >= _MAX_STACK:
            self.fail(f"more than {_MAX_STACK} values on the pickle stack")
        self.stack.append(value)

    def pop(self):
        if not self.stack or (self.marks and len(self.stack) <= self.marks[-1]):
            self.fail("an opcode needs a value the pickle never gave")
        return self.stack.pop()

    def pop_mark(self) -> list:
        if not self.marks:
            self.fail("a closing opcode without its MARK")
        start = self.marks.pop()
        items, self.stack[start:] = self.stack[start:], []
        return items

    def remember(self, index: int) -> None:
        if not self.stack:
            self.fail("nothing to memoise")
        if len(self.memo) >= _MAX_MEMO and index not in self.memo:
            self.fail(f"more than {_MAX_MEMO} memoised values")
        self.memo[index] = self.stack[-1]

    def recall(self, index: int) -> None:
        if index not in self.memo:
            self.fail(f"memo entry {index} was never stored")
        self.push(self.memo[index])

    # ---- the objects ----

    def reduce(self) -> None:
        args, function = self.pop(), self.pop()
        if function == "reconstruct" and args == ("ndarray", (0,), b"b"):
            self.push(_Array())
        elif function == "dtype" and isinstance(args, tuple) and len(args) == 3 and args[1:] == (False, True):
            spec = args[0]
            if not (isinstance(spec, str) and spec in DTYPES):
                self.fail(f"dtype {spec!r} is not one a release file holds (plain numbers only: "
                          f"{', '.join(str(d) for d in DTYPES.values())})")
            self.push(_Dtype(spec))
        else:
            self.fail(f"a call {function}{_short(args)} that does not build an array")

    def new_object(self) -> None:
        args, cls = self.pop(), self.pop()
        if cls != "QuantizedWeight8bit" or args != ():
            self.fail(f"an object {cls}{_short(args)} other than QuantizedWeight8bit()")
        self.push(_Quantized())

    def build(self) -> None:
        state, target = self.pop(), self.pop()
        if isinstance(target, _Dtype) and target.state is None:
            expected = DTYPES[target.spec].__reduce__()[2]
            # Compare all but the flags: we never apply the state, only refuse what numpy would misread.
            if not (isinstance(state, tuple) and len(state) == len(expected) and state[:7] == expected[:7]):
                self.fail(f"dtype {DTYPES[target.spec]} with unexpected state {_short(state)} "
                          f"(byte order, fields or sizes other than numpy's own {expected[:7]})")
            target.state = state
        elif isinstance(target, _Array) and target.array is None:
            target.array = self.array(state)
        elif isinstance(target, _Quantized) and target.value is None:
            if not (isinstance(state, dict) and set(state) == {"weight", "scales"}
                    and all(isinstance(v, _Array) and v.array is not None for v in state.values())):
                self.fail(f"QuantizedWeight8bit state {_short(state)} is not {{'weight': array, 'scales': array}}")
            target.value = QuantizedWeight8bit(weight=state["weight"].array, scales=state["scales"].array)
        else:
            self.fail(f"BUILD on {type(target).__name__}, which is not an unfinished array, dtype or "
                      "QuantizedWeight8bit")
        self.push(target)

    def array(self, state) -> np.ndarray:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            self.fail(f"array state {_short(state)} is not (1, shape, dtype, fortran, bytes)")
        _, shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and len(shape) <= _MAX_DIMS
                and all(type(d) is int and 0 <= d < 2**48 for d in shape)):
            self.fail(f"array shape {_short(shape)} is not a tuple of at most {_MAX_DIMS} sizes")
        if not (isinstance(dtype, _Dtype) and dtype.state is not None) or type(fortran) is not bool:
            self.fail("array dtype or order is not a plain dtype and a bool")
        if not isinstance(data, bytes | _OnDisk):
            self.fail(f"array data is a {type(data).__name__}, not bytes")
        dt = DTYPES[dtype.spec]
        length = data.size if isinstance(data, _OnDisk) else len(data)
        if math.prod(shape) * dt.itemsize != length:
            self.fail(f"array of shape {shape} {dt} needs {math.prod(shape) * dt.itemsize} bytes, "
                      f"the file gives {length}")
        order = "F" if fortran else "C"
        if isinstance(data, _OnDisk):
            position = self.file.tell()  # np.memmap seeks the file it maps
            mapped = np.memmap(self.file, dtype=dt, mode="r", offset=data.offset, shape=shape, order=order)
            self.file.seek(position)
            return mapped
        return np.frombuffer(data, dtype=dt).reshape(shape, order=order)

    # ---- the opcodes ----

    def run(self):
        op = self.read(1)
        if op != b"\x80" or not 2 <= self.unsigned(1) <= 5:
            self.fail("not a pickle of protocol 2 to 5")
        for _ in range(_MAX_OPCODES):
            op = self.read(1)
            if op == b".":
                return self.finish()
            handler = _OPCODES.get(op)
            if handler is None:
                self.fail(f"pickle opcode {op!r} is not one a tensor file uses")
            handler(self)
        self.fail(f"more than {_MAX_OPCODES} pickle opcodes")

    def finish(self):
        if self.file.tell() != self.size:
            self.fail(f"{self.size - self.file.tell()} bytes after the end of the pickle")
        if len(self.stack) != 1 or self.marks:
            self.fail("the pickle does not end with exactly one value")
        result = self.stack[0]
        if isinstance(result, _Array) and result.array is not None:
            return result.array
        if isinstance(result, _Quantized) and result.value is not None:
            return result.value
        self.fail(f"holds a {type(result).__name__}, not an array or QuantizedWeight8bit")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _stack_global(r: _Reader) -> None:
    name, module = r.pop(), r.pop()
    if not (isinstance(module, str) and isinstance(name, str)):
        r.fail("STACK_GLOBAL of values that are not strings")
    _push_global(r, module, name)


def _global(r: _Reader) -> None:  # protocol 2/3: "module\nname\n"
    module, name = (_line(r) for _ in range(2))
    _push_global(r, module, name)


def _line(r: _Reader) -> str:
    chars = bytearray()
    while (char := r.read(1)) != b"\n":
        chars += char
        if len(chars) > 200:
            r.fail("a global name longer than 200 characters")
    return chars.decode("utf-8", "replace")


def _push_global(r: _Reader, module: str, name: str) -> None:
    token = _GLOBALS.get((module, name))
    if token is None:
        r.fail(f"refusing global '{module}.{name}': a release checkpoint holds only numpy arrays and "
               "QuantizedWeight8bit")
    r.push(token)


def _tuple(n: int):
    def handler(r: _Reader) -> None:
        items = [r.pop() for _ in range(n)][::-1]
        r.push(tuple(items))
    return handler


def _set_items(r: _Reader) -> None:
    items = r.pop_mark()
    target = r.pop()
    if not isinstance(target, dict) or len(items) % 2:
        r.fail("SETITEMS on something that is not a dict")
    for key, value in zip(items[::2], items[1::2], strict=True):
        if not isinstance(key, str):
            r.fail(f"a dict key {_short(key)} that is not a string")
        target[key] = value
    r.push(target)


def _set_item(r: _Reader) -> None:
    value, key, target = r.pop(), r.pop(), r.pop()
    if not isinstance(target, dict) or not isinstance(key, str):
        r.fail("SETITEM on something that is not a dict keyed by strings")
    target[key] = value
    r.push(target)


def _mark(r: _Reader) -> None:
    if len(r.marks) >= _MAX_STACK:
        r.fail("too many nested MARKs")
    r.marks.append(len(r.stack))


def _frame(r: _Reader) -> None:
    # Frames only group opcodes for buffering; the opcodes inside are read as any others.
    if r.unsigned(8) > r.size - r.file.tell():
        r.fail("a frame longer than the rest of the file")


def _signed(n: int):
    return lambda r: r.push(int.from_bytes(r.read(n), "little", signed=True))


def _long1(r: _Reader) -> None:
    n = r.unsigned(1)
    if n > 8:
        r.fail(f"an integer of {n} bytes")
    r.push(int.from_bytes(r.read(n), "little", signed=True))


_OPCODES = {
    b"\x95": _frame,
    b"\x93": _stack_global,
    b"c": _global,
    b"\x8c": lambda r: r.push(r.text(r.unsigned(1))),  # SHORT_BINUNICODE
    b"X": lambda r: r.push(r.text(r.unsigned(4))),  # BINUNICODE
    b"\x8d": lambda r: r.push(r.text(r.unsigned(8))),  # BINUNICODE8
    b"C": lambda r: r.push(r.read(r.unsigned(1))),  # SHORT_BINBYTES
    b"B": lambda r: r.push(r.data(r.unsigned(4))),  # BINBYTES
    b"\x8e": lambda r: r.push(r.data(r.unsigned(8))),  # BINBYTES8
    b"K": lambda r: r.push(r.unsigned(1)),  # BININT1
    b"M": lambda r: r.push(r.unsigned(2)),  # BININT2
    b"J": _signed(4),  # BININT
    b"\x8a": _long1,
    b"N": lambda r: r.push(None),
    b"\x88": lambda r: r.push(True),
    b"\x89": lambda r: r.push(False),
    b"(": _mark,
    b")": lambda r: r.push(()),
    b"t": lambda r: r.push(tuple(r.pop_mark())),
    b"\x85": _tuple(1),
    b"\x86": _tuple(2),
    b"\x87": _tuple(3),
    b"}": lambda r: r.push({}),
    b"s": _set_item,
    b"u": _set_items,
    b"\x94": lambda r: r.remember(len(r.memo)),  # MEMOIZE
    b"q": lambda r: r.remember(r.unsigned(1)),  # BINPUT
    b"r": lambda r: r.remember(r.unsigned(4)),  # LONG_BINPUT
    b"h": lambda r: r.recall(r.unsigned(1)),  # BINGET
    b"j": lambda r: r.recall(r.unsigned(4)),  # LONG_BINGET
    b"R": _Reader.reduce,
    b"\x81": _Reader.new_object,  # NEWOBJ
    b"b": _Reader.build,
}


def read_pickled_tensor(path: str | Path, *, mapped: bool = False, max_bytes: int | None = None,
                        holds: str = "the tensor it holds", read_ahead: bool = False
                        ) -> np.ndarray | QuantizedWeight8bit:
    """One release tensor file → a numpy array or a QuantizedWeight8bit, never anything else.

    mapped=True leaves large arrays in the file as read-only memory maps (slicing one then reads
    only the pages it covers); read_ahead=True asks the kernel to start reading the whole file now
    (for a process that will need every page). `max_bytes` refuses, before reading, a file larger
    than the tensor it should hold (described by `holds` in the error) can be.
    """
    path = Path(path)
    try:
        file = open_regular(path, "a tensor file")  # a FIFO would block, a device never end
    except FileRefusedError as error:
        raise CheckpointError(str(error)) from None
    with file:
        size = os.fstat(file.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise CheckpointError(f"{path}: {size} bytes, more than the {max_bytes} that {holds} can take")
        if read_ahead and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)
        try:
            return _Reader(file, path, size, mapped).run()
        except (RecursionError, MemoryError, struct.error, OverflowError) as error:
            raise CheckpointError(f"{path}: not a readable tensor pickle ({type(error).__name__})") from None
