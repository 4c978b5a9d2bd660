"""The tests' reader of an offline run's ``.wandb`` file: its records, and a wait until wandb has written it.

The ``.wandb`` file is a LevelDB-style log of protobuf ``Record`` messages (wandb's own
``wandb.proto.wandb_internal_pb2``): a 7-byte file header (``:W&B``, magic 0xBEE1, version 0),
then 32 KiB blocks of chunks, each ``crc32 (4, LE) | length (2, LE) | type (1) | data``, where
the CRC-32 covers the type byte and the data, and type is FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4.
wandb 0.31 no longer ships a Python reader for it, so this module parses it directly; a file it
cannot parse raises ``WandbFormatError`` naming the installed wandb version.
"""
from __future__ import annotations

import glob
import os
import struct
import time
import zlib

BLOCK_SIZE = 32768
HEADER_IDENT = b":W&B"
HEADER_MAGIC = 0xBEE1
HEADER_VERSION = 0
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
TESTED_WANDB = "0.31.0"
RUN_DIR_PREFIXES = ("offline-run-", "run-")


class WandbFormatError(Exception):
    """The ``.wandb`` file is not in the record format this reader understands."""


def _format_error(path: str, what: str) -> WandbFormatError:
    try:
        import wandb

        version = wandb.__version__
    except Exception:  # pragma: no cover
        version = "unknown"
    return WandbFormatError(
        f"cannot parse {path}: {what} (reader written for wandb {TESTED_WANDB} records; installed wandb {version})"
    )


# --------------------------------------------------------------------------- raw records
def iter_records(wandb_file: str):
    """Yield the ``wandb_internal_pb2.Record`` messages of a ``.wandb`` file, in order.

    A truncated tail (a run killed mid-write) ends the iteration quietly; a bad header,
    a checksum mismatch or an unparsable record raises ``WandbFormatError``.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    with open(wandb_file, "rb") as f:
        data = f.read()
    if len(data) < CHUNK_HEADER or data[:4] != HEADER_IDENT:
        raise _format_error(wandb_file, "missing ':W&B' file header")
    magic, version = struct.unpack("<HB", data[4:7])
    if magic != HEADER_MAGIC or version != HEADER_VERSION:
        raise _format_error(wandb_file, f"unknown header magic={magic:#x} version={version}")

    pos = CHUNK_HEADER
    pending: bytes | None = None
    n = len(data)
    while pos < n:
        left = BLOCK_SIZE - pos % BLOCK_SIZE
        if left < CHUNK_HEADER:  # block trailer padding
            pos += left
            continue
        if pos + CHUNK_HEADER > n:
            return
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        start, end = pos + CHUNK_HEADER, pos + CHUNK_HEADER + length
        if kind == 0 and length == 0 and crc == 0:  # zero padding (preallocated / torn tail)
            pos = pos + left
            continue
        if end > n:
            return  # truncated final chunk
        payload = data[start:end]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise _format_error(wandb_file, f"checksum mismatch at byte {pos}")
        pos = end
        if kind == FULL:
            pending, record = None, payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            if pending is None:
                raise _format_error(wandb_file, f"MIDDLE chunk without FIRST at byte {start}")
            pending += payload
            continue
        elif kind == LAST:
            if pending is None:
                raise _format_error(wandb_file, f"LAST chunk without FIRST at byte {start}")
            record, pending = pending + payload, None
        else:
            raise _format_error(wandb_file, f"unknown chunk type {kind} at byte {start}")
        msg = pb.Record()
        try:
            msg.ParseFromString(record)
        except DecodeError as e:
            raise _format_error(wandb_file, f"undecodable record ({e})") from e
        yield msg


# --------------------------------------------------------------------------- value decoding
def _wandb_file(run_dir_or_wandb_file: str) -> str:
    p = os.fspath(run_dir_or_wandb_file)
    if os.path.isfile(p):
        return p
    if os.path.isdir(p):
        found = sorted(glob.glob(os.path.join(p, "*.wandb")))
        if found:
            return found[0]
        raise FileNotFoundError(f"no .wandb file in {p}")
    raise FileNotFoundError(f"{p} does not exist")


def wait_until_written(run_dir_or_wandb_file, timeout: float = 30.0, settle_s: float = 1.0,
                       poll: float = 0.02) -> bool:
    """Wait until a run's ``.wandb`` file holds its exit record (True), or has not changed for ``settle_s`` (a run
    that never finished, e.g. killed) or ``timeout`` passed (False).

    The wandb service writes the file in its own process, and can still be flushing it when ``run.finish()``
    has returned, so the tests read a run back only after this.
    """
    deadline = time.monotonic() + timeout
    last_size, since = -1, time.monotonic()
    while True:
        try:
            path = _wandb_file(run_dir_or_wandb_file)
            size = os.path.getsize(path)
        except (FileNotFoundError, OSError):
            path, size = None, -1
        if path is not None and size > CHUNK_HEADER and size == last_size:
            try:
                if any(r.WhichOneof("record_type") == "exit" for r in iter_records(path)):
                    return True
            except WandbFormatError:
                pass  # caught mid-write; look again
        if size != last_size:
            last_size, since = size, time.monotonic()
        now = time.monotonic()
        if now > deadline or (size > 0 and now - since > settle_s):
            return False
        time.sleep(poll)
