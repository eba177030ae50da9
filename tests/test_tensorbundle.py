"""Reading a checkpoint index's header: real indexes, and blocks that lie."""

from __future__ import annotations

import io

import pytest

from receiver import tensorbundle
from tests.helpers import HALF_PLUS_TWO


def test_a_real_snappy_compressed_index_names_its_shards():
    assert tensorbundle.read_num_shards(HALF_PLUS_TWO / "variables" / "variables.index") == 1


def test_a_snappy_block_claiming_gigabytes_is_refused_before_it_is_inflated():
    claimed = 4 * 2**30
    preamble = bytes([(claimed >> (7 * i) & 0x7F) | (0x80 if i < 4 else 0) for i in range(5)])
    block = preamble + b"\x00" * 10
    file = io.BytesIO(block + b"\x01" + b"\x00" * 4)  # type 1: Snappy; then its CRC
    with pytest.raises(tensorbundle.BundleError, match="claims 4294967296 bytes uncompressed"):
        tensorbundle._read_block(file, 0, len(block), len(file.getvalue()))


def test_a_block_cut_short_is_refused():
    file = io.BytesIO(b"\x00" * 8)
    with pytest.raises(tensorbundle.BundleError, match="outside the file"):
        tensorbundle._read_block(file, 4, 100, 8)
