"""How many data shards a TensorFlow checkpoint's `variables.index` calls for.

The index is a table in LevelDB's format (TensorFlow's `core/lib/io/table*`): data
blocks of sorted key/value entries, an index block pointing at them, and a fixed-size
footer pointing at the index block. The entry with the empty key, which sorts first, is
the `BundleHeaderProto` whose `num_shards` names the data files
`variables.data-00000-of-0000N` ... (`core/util/tensor_bundle/tensor_bundle.cc`).
Only the footer, the first index entry and the first data entry are read. Blocks may be
Snappy-compressed (TensorFlow's default); cramjam decompresses them.
"""

from __future__ import annotations

from pathlib import Path

import cramjam
from google.protobuf import message

from receiver import protos

_FOOTER_BYTES = 48  # two block handles of at most 20 bytes each, padded, then the magic
_MAGIC = 0xDB4775248B80FB57
_BLOCK_TRAILER_BYTES = 5  # compression type, masked CRC-32C
_UNCOMPRESSED, _SNAPPY = 0, 1  # the block types TensorFlow's table writer uses
_MAX_BLOCK_BYTES = 64 * 1024 * 1024
DATA_FILE = "variables.data-{shard:05d}-of-{shards:05d}"


class BundleError(Exception):
    """The index is not a checkpoint index this reader understands."""


def data_file_names(shards: int) -> list[str]:
    return [DATA_FILE.format(shard=shard, shards=shards) for shard in range(shards)]


def read_num_shards(index: Path) -> int:
    with index.open("rb") as file:
        size = file.seek(0, 2)
        if size < _FOOTER_BYTES:
            raise BundleError(f"{size} bytes is too short for a checkpoint index")
        file.seek(size - _FOOTER_BYTES)
        footer = file.read(_FOOTER_BYTES)
        if int.from_bytes(footer[-8:], "little") != _MAGIC:
            raise BundleError("no table magic number at its end (not a checkpoint index)")
        position = _skip_handle(footer, 0)  # the meta-index block: unused
        index_offset, position = _varint(footer, position)
        index_size, _ = _varint(footer, position)
        index_block = _read_block(file, index_offset, index_size, size)
        _, handle = _first_entry(index_block)
        data_offset, position = _varint(handle, 0)
        data_size, _ = _varint(handle, position)
        key, value = _first_entry(_read_block(file, data_offset, data_size, size))
    if key != b"":
        raise BundleError("its first entry is not the bundle header")
    header = protos.BundleHeaderProto()
    try:
        header.ParseFromString(value)
    except message.DecodeError:
        raise BundleError("its header entry does not parse") from None
    shards = int(header.num_shards)
    if shards < 1:
        raise BundleError(f"its header names {shards} shards")
    return shards


def _read_block(file: object, offset: int, size: int, file_size: int) -> bytes:
    if size > _MAX_BLOCK_BYTES or offset + size + _BLOCK_TRAILER_BYTES > file_size:
        raise BundleError("a block lies outside the file")
    file.seek(offset)  # type: ignore[attr-defined]
    block: bytes = file.read(size + _BLOCK_TRAILER_BYTES)  # type: ignore[attr-defined]
    if len(block) != size + _BLOCK_TRAILER_BYTES:
        raise BundleError("a block is cut short")
    if block[size] == _UNCOMPRESSED:
        return block[:size]
    if block[size] == _SNAPPY:
        claimed, _ = _varint(block, 0)  # Snappy's preamble: the uncompressed length
        if claimed > _MAX_BLOCK_BYTES:
            raise BundleError(f"a block claims {claimed} bytes uncompressed")
        try:
            return bytes(cramjam.snappy.decompress_raw(block[:size]))
        except cramjam.DecompressionError:
            raise BundleError("a Snappy-compressed block does not decompress") from None
    raise BundleError(f"a block has compression type {block[size]}, not one TensorFlow writes")


def _first_entry(block: bytes) -> tuple[bytes, bytes]:
    """The first key and value of a block (its first entry shares no prefix)."""
    shared, position = _varint(block, 0)
    unshared, position = _varint(block, position)
    value_length, position = _varint(block, position)
    if shared:
        raise BundleError("a block's first entry shares a prefix")
    key_end = position + unshared
    value_end = key_end + value_length
    if value_end > len(block):
        raise BundleError("an entry runs past its block")
    return block[position:key_end], block[key_end:value_end]


def _skip_handle(data: bytes, position: int) -> int:
    _, position = _varint(data, position)
    _, position = _varint(data, position)
    return position


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """A LevelDB varint (little-endian base 128), and the position after it."""
    value = shift = 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    raise BundleError("a length runs off the end of its field")
