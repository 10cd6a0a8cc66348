"""Checksummed values: every value of the state database, the changelog and the meta topic is a
small header (magic, format version, flags, payload length, checksum) followed by the
payload: pickled, or a byte string (a packed key state) as it is; zlib-compressed when mostly
zeros. So a bit flip is told from a good value before anything is unpickled.

Format 5 checks a payload with CRC-32 (in the first 4 of the header's 16 checksum bytes, the
rest zeros); format 4, which is still read, with BLAKE2b-128. CRC-32 finds every error burst of
up to 32 bits and every other error but one in 2^32, the guarantee storage formats made for
accidental damage rely on (Kafka's record batches, ext4's metadata, PNG, zip); a cryptographic
digest adds nothing against a flipped bit, and cost 3.6 µs of a new key's ~1 kB value against
0.8 µs (measured here, one core shared).

>>> blob = encode({"a": 1})
>>> int.from_bytes(blob[8:10], "little"), blob[20:24] != bytes(4), blob[24:36] == bytes(12)
(6, True, True)
"""

from __future__ import annotations

import hashlib
import pickle
import struct
import zlib
from typing import Any

from adaptd.errors import StartError

#: 4: one SQLite database, values checksummed one by one (BLAKE2b); 5: the same, CRC-32;
#: 6: CRC-32, key states in segments (adaptd.segment_store), which an older adaptd cannot read:
#: the shared state's header tells it so ("has format 6, expected 5").
FORMAT_VERSION = 6
#: Formats still read, with the checksum each was written with.
_READ_FORMATS = (4, 5, 6)
_MAGIC = b"ADAPTDCK"
#: magic, format version, flags, payload length in bytes, checksum of the payload (16 bytes).
_HEADER = struct.Struct("<8sHHQ16s")
_COMPRESSED = 1
#: The payload is a byte string stored as it is (a packed key state), not pickled.
_RAW = 2


class CheckpointError(StartError):
    """A checkpoint value (or the whole database) could not be used; the message names where
    and why. A :class:`StartError`: the CLI prints it as one line and exits 2."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where} {reason}")
        self.where = where
        self.reason = reason


def encode(payload: Any) -> bytes:
    """``payload`` pickled behind the checksummed header; compressed when mostly zeros. Task
    states are fixed-size buffers, nearly empty for a key with few records (compressed to a
    tenth or less), full of incompressible floats for a busy key (where zlib would double the
    cost of a checkpoint for a third off its size)."""
    if type(payload) is bytes:
        data, flags = payload, _RAW
    else:
        data, flags = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL), 0
    if data.count(0) * 2 > len(data):
        data, flags = zlib.compress(data, 1), flags | _COMPRESSED
    return _HEADER.pack(_MAGIC, FORMAT_VERSION, flags, len(data), _digest(data)) + data


def decode(blob: bytes, where: str) -> Any:
    """The payload :func:`encode` wrote, after checking header and checksum. Raises
    :class:`CheckpointError` naming ``where`` and what was wrong.

    >>> decode(encode({"a": 1}), "x")
    {'a': 1}
    >>> try:
    ...     decode(encode({"a": 1})[:-1], "partition 0 key 'a'")
    ... except CheckpointError as exc:
    ...     print(exc)
    partition 0 key 'a' is truncated: 20 payload bytes, expected 21
    """
    data, flags = check(blob, where)
    try:
        data = zlib.decompress(data) if flags & _COMPRESSED else data
        return bytes(data) if flags & _RAW else pickle.loads(data)
    except (zlib.error, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, UnicodeDecodeError) as exc:
        # A good checksum over a payload this code cannot rebuild (classes moved or renamed).
        raise CheckpointError(where, f"is unreadable ({type(exc).__name__}: {exc})") from None


def check(blob: bytes, where: str) -> tuple[bytes, int]:
    """The payload bytes and flags of a value :func:`encode` wrote, once its header and
    checksum are checked; nothing is unpickled. Raises :class:`CheckpointError`."""
    if len(blob) < _HEADER.size:
        raise CheckpointError(where, f"is truncated: {len(blob)} bytes, shorter than a header")
    magic, version, flags, length, digest = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise CheckpointError(where, f"is not an adaptd checkpoint value (header {magic!r})")
    if version not in _READ_FORMATS:
        raise CheckpointError(where, f"has format {version}, expected {FORMAT_VERSION} (or 4, 5)")
    data = blob[_HEADER.size:]
    if len(data) != length:
        raise CheckpointError(where, f"is truncated: {len(data)} payload bytes, expected {length}")
    if (_digest(data) if version >= 5 else _blake2b(data)) != digest:
        raise CheckpointError(where, "is corrupt: checksum mismatch")
    return data, flags


def _digest(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(4, "little") + _PAD


_PAD = bytes(12)


def _blake2b(data: bytes) -> bytes:
    """Format 4's checksum."""
    return hashlib.blake2b(data, digest_size=16).digest()
