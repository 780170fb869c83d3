"""Reading files we did not write: only regular files, of bounded size, with errors naming the file.

A FIFO, a device or a socket where a config, a tokenizer or a shard should be would block a read
forever or stream without end, so every input is checked twice: with `os.stat` before it is
opened (symlinks are followed, so the check is on what they point to) and with `os.fstat` on the
descriptor after it is opened with O_NONBLOCK (opening a FIFO that way never waits for a writer,
so one swapped in between the two checks is still refused, not blocked on).

    open_regular(path, what)                         → a binary file object of a regular file
    read_regular_bytes(path, what, max_bytes)        → its bytes, at most max_bytes of them
    read_json(path, what, max_bytes=JSON_MAX_BYTES)  → the parsed JSON value
    check_regular(path, what)                        → the path, for libraries that open files themselves

`what` says what the file is for ("the model config", "the tokenizer"), and is part of the message.
Every refusal is a `FileRefusedError` (an OSError).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["FileRefusedError", "open_regular", "read_regular_bytes", "read_json", "check_regular",
           "JSON_MAX_BYTES"]

JSON_MAX_BYTES = 16 << 20  # configs are under 1 KB and Grok-1's HF index ~200 KB: anything near this is not one

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


class FileRefusedError(OSError):
    """An input file that is missing, not a regular file, too large, or not what it should hold."""


def _refuse_unless_regular(path: Path, what: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise FileRefusedError(f"{path}: {what} must be a regular file, but this is {kind}")


def check_regular(path: str | Path, what: str) -> Path:
    """`path` if it is (or links to) a regular file; otherwise a FileRefusedError naming it."""
    path = Path(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise FileRefusedError(f"{path}: cannot read {what}: no such file") from None
    except OSError as error:
        raise FileRefusedError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    _refuse_unless_regular(path, what, status.st_mode)
    return path


def open_regular(path: str | Path, what: str) -> BinaryIO:
    """Open a regular file for binary reading, refusing FIFOs, devices, sockets and folders."""
    path = check_regular(path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise FileRefusedError(f"{path}: cannot open {what} ({error.strerror or error})") from None
    try:
        _refuse_unless_regular(path, what, os.fstat(descriptor).st_mode)  # what was opened, not what was checked
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_regular_bytes(path: str | Path, what: str, max_bytes: int) -> bytes:
    """The whole content of a regular file of at most `max_bytes` bytes."""
    with open_regular(path, what) as file:
        size = os.fstat(file.fileno()).st_size
        if size > max_bytes:
            raise FileRefusedError(f"{path}: {what} is {size:,} bytes, more than the {max_bytes:,} such a file "
                                   "can be; is this the right file?")
        data = file.read(max_bytes + 1)  # +1: a file that grew while we read is refused too
    if len(data) > max_bytes:
        raise FileRefusedError(f"{path}: {what} grew past {max_bytes:,} bytes while being read")
    return data


def read_json(path: str | Path, what: str, max_bytes: int = JSON_MAX_BYTES):
    """Parse a UTF-8 JSON file; a FileRefusedError naming the file for anything that is not valid JSON.

    Python's json raises ValueError for bad syntax and for integers of more than 4300 digits, and
    RecursionError for deeply nested arrays; all three are a bad file, not a bug.
    """
    data = read_regular_bytes(path, what, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileRefusedError(f"{path}: {what} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise FileRefusedError(f"{path}: {what} is nested too deeply to be a JSON config") from None
    except ValueError as error:  # json.JSONDecodeError, or an integer too long to convert
        raise FileRefusedError(f"{path}: {what} is not valid JSON ({error})") from None
