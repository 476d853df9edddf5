"""Read TensorFlow 1 checkpoints (TensorBundle: ``.index`` + ``.data-*``) with numpy only.

The musicnn wheel ships its weights as TF1 checkpoints. Reading them directly avoids a
TensorFlow install (hundreds of MB) at set-up and in CI, and avoids a conversion step whose
output could go stale: the wheel's files are the single source of the weights. Only raw
numbers are read; nothing in the checkpoint is executed (the ``.meta`` graph is ignored).

Format (tensorflow/core/util/tensor_bundle): the ``.index`` file is a LevelDB-style SSTable
(48-byte footer with the index-block handle and magic ``0xdb4775248b80fb57``; prefix-compressed
blocks with a restart array; 5-byte block trailers) mapping each tensor name to a serialized
``BundleEntryProto`` (dtype, shape, shard id, byte offset, byte size); the empty key holds the
``BundleHeaderProto``. Tensor bytes are stored little-endian and contiguous in
``<prefix>.data-<shard>-of-<num_shards>``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
# tensorflow/core/framework/types.proto DataType -> numpy dtype (little-endian)
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2", 19: "<f2",
           22: "<u4", 23: "<u8"}


class CheckpointFormatError(ValueError):
    """The files are not a readable TF1 TensorBundle checkpoint."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointFormatError("varint too long")


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: varints as ints, length-delimited as bytes."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        else:
            raise CheckpointFormatError(f"unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives (``BundleEntryProto``)."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def _parse_entry(buf: bytes) -> TensorEntry:
    dtype, shape, shard, offset, size = 0, [], 0, 0, 0
    for field, value in _proto_fields(buf):
        if field == 1:
            dtype = int(value)
        elif field == 2:  # TensorShapeProto: repeated Dim dim = 2 { int64 size = 1 }
            for f, dim in _proto_fields(value):
                if f == 2:
                    shape.append(next((int(v) for g, v in _proto_fields(dim) if g == 1), 0))
        elif field == 3:
            shard = int(value)
        elif field == 4:
            offset = int(value)
        elif field == 5:
            size = int(value)
        elif field == 7:
            raise CheckpointFormatError("sliced (partitioned) tensors are not supported")
    return TensorEntry(dtype, tuple(shape), shard, offset, size)


def _block_entries(data: bytes, handle: tuple[int, int]) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of one SSTable block (prefix-compressed keys)."""
    offset, size = handle
    if offset + size + 5 > len(data):
        raise CheckpointFormatError("block handle points past the end of the index file")
    if data[offset + size] != 0:
        raise CheckpointFormatError("compressed index blocks are not supported")
    block = data[offset:offset + size]
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    out, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        out.append((key, block[pos:pos + value_len]))
        pos += value_len
    return out


def read_index(prefix: str | Path) -> tuple[int, dict[str, TensorEntry]]:
    """Number of shards and the tensor table of the checkpoint ``prefix`` (``<prefix>.index``).

    Raises:
        FileNotFoundError: if the index file is missing.
        CheckpointFormatError: if it is not a TensorBundle index.
    """
    path = Path(f"{prefix}.index")
    if not path.is_file():
        raise FileNotFoundError(f"TF checkpoint index not found: {path}")
    data = path.read_bytes()
    if len(data) < _FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
        raise CheckpointFormatError(f"{path}: not a TensorBundle index (bad footer magic)")
    footer = data[-_FOOTER:]
    _, pos = _varint(footer, 0)  # metaindex handle (unused)
    _, pos = _varint(footer, pos)
    index_off, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    num_shards, table = 1, {}
    for _, handle in _block_entries(data, (index_off, index_size)):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        for key, value in _block_entries(data, (off, size)):
            if key == b"":  # BundleHeaderProto { int32 num_shards = 1; endianness = 2; version = 3 }
                fields = dict(_proto_fields(value))
                num_shards = int(fields.get(1, 1))
                if int(fields.get(2, 0)) != 0:
                    raise CheckpointFormatError(f"{path}: big-endian checkpoints are not supported")
            else:
                table[key.decode("utf-8")] = _parse_entry(value)
    return num_shards, table


def load_tf_checkpoint(prefix: str | Path, skip_optimizer: bool = True) -> dict[str, np.ndarray]:
    """All tensors of a TF1 checkpoint as numpy arrays.

    Args:
        prefix: checkpoint prefix; ``<prefix>.index`` and ``<prefix>.data-*`` must exist
            (for a directory checkpoint saved as ``dir/`` the prefix is ``dir/``).
        skip_optimizer: drop Adam/Momentum slot variables and ``beta*_power`` accumulators.

    Returns:
        ``{variable name: array}`` in the stored dtype and shape.

    Raises:
        FileNotFoundError: for a missing index or data shard.
        CheckpointFormatError: for a corrupt or unsupported checkpoint.
    """
    num_shards, table = read_index(prefix)
    shards: dict[int, bytes] = {}
    out = {}
    for name, e in sorted(table.items()):
        if skip_optimizer and (name.endswith(("/Adam", "/Adam_1", "/Momentum")) or "_power" in name):
            continue
        if e.dtype not in _DTYPES:
            continue  # strings and other non-numeric entries
        if e.shard not in shards:
            path = Path(f"{prefix}.data-{e.shard:05d}-of-{num_shards:05d}")
            if not path.is_file():
                raise FileNotFoundError(f"TF checkpoint data shard not found: {path}")
            shards[e.shard] = path.read_bytes()
        dtype = np.dtype(_DTYPES[e.dtype])
        count = int(np.prod(e.shape, dtype=np.int64)) if e.shape else 1
        blob = shards[e.shard]
        if count * dtype.itemsize != e.size or e.offset + e.size > len(blob):
            raise CheckpointFormatError(f"{prefix}: tensor {name!r} shape {e.shape} does not match its "
                                        f"{e.size} stored bytes at offset {e.offset}")
        out[name] = np.frombuffer(blob, dtype, count, e.offset).reshape(e.shape).copy()
    return out
