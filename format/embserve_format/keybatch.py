"""A packed batch of keys: one byte string, each key in UTF-8 followed by a line feed (``"cat\\ndog\\n"``).

The wire form of ``LookupRequest.packed_keys`` and the layout the key index hashes and compares in
one pass (the layout of keys.txt): a server handed these bytes finds 1,024 rows without building
1,024 ``str`` objects, where ``repeated string keys`` costs one object per key to decode and a join
and an encode to get back to bytes. :func:`pack_keys` writes the form (the clients), :meth:`KeyBatch.parse`
checks and reads it (the server), :meth:`embserve_format.keyindex.KeyIndex.ids_for` takes a
:class:`KeyBatch` as it is. A line feed can end every key because no key holds one (the bundle's
key rule, :func:`embserve_format.bundle.valid_key`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import overload

import numpy as np

KEY_END = b"\n"  # ends every key of a batch, as it ends every line of keys.txt


def join_keys(keys: Sequence[str]) -> bytes | None:
    """The packed bytes of ``keys``, or None when one is not a str or holds a line feed (or a lone surrogate)."""
    if not len(keys):
        return b""
    try:
        data = ("\n".join(keys) + "\n").encode("utf-8")
    except (TypeError, UnicodeEncodeError):
        return None
    return data if data.count(KEY_END) == len(keys) else None


def pack_keys(keys: Sequence[str], field: str = "keys", first: int = 0) -> bytes:
    """``keys`` as one packed batch (``LookupRequest.packed_keys``); ``first``: the position of keys[0] in the caller's list.

    Raises:
        ValueError: an item that is not a str, holds a line feed (no table has such a key) or
            cannot be encoded as UTF-8; the message names its position.
    """
    data = join_keys(keys)
    if data is not None:
        return data
    for n, key in enumerate(keys, first):
        if not isinstance(key, str):
            raise ValueError(f"{field}: item {n} ({key!r}) is not a str")
        if "\n" in key:
            raise ValueError(f"{field}: item {n} ({key[:40]!r}) holds a line feed; keys never do (keys.txt holds one key a line)")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{field}: item {n} ({key[:40]!r}) is not encodable as UTF-8 ({exc.reason})") from None
    raise AssertionError("unreachable: join_keys refused keys that each pack")  # pragma: no cover


class KeyBatch(Sequence[str]):
    """Packed keys read in place: ``len``, ``batch[i]`` (one key decoded on demand), and the byte layout.

    Build with :meth:`parse` (checked bytes off the wire) or :meth:`of` (keys already in hand).
    """

    def __init__(self, data: bytes, count: int) -> None:
        self.data = data  # every key followed by KEY_END, valid UTF-8
        self.nkeys = count

    @classmethod
    def of(cls, keys: Sequence[str]) -> KeyBatch | None:
        """``keys`` packed, or None when one cannot be (see :func:`join_keys`)."""
        data = join_keys(keys)
        return None if data is None else cls(data, len(keys))

    @classmethod
    def parse(cls, data: bytes, field: str = "packed_keys") -> KeyBatch:
        """Check packed bytes from a request: whole keys, non-empty, UTF-8, no carriage return.

        Every check is one C-level pass over the bytes (no object per key); limits (key count,
        characters a key) are the caller's.

        Raises:
            ValueError: naming ``field``, the key's position and what is wrong with it.
        """
        count = data.count(KEY_END)
        if not data:
            raise ValueError(f"{field}: holds no key (each key is UTF-8 followed by a line feed)")
        if data[-1:] != KEY_END:
            raise ValueError(f"{field}: key {count} does not end with a line feed (each key is UTF-8 followed by one)")
        if data[:1] == KEY_END or b"\n\n" in data:
            at = 0 if data[:1] == KEY_END else data.count(KEY_END, 0, data.index(b"\n\n") + 1)
            raise ValueError(f"{field}: key {at} is empty")
        if b"\r" in data:
            at = data.count(KEY_END, 0, data.index(b"\r"))
            raise ValueError(f"{field}: key {at} holds a carriage return; keys never do")
        if not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                at = data.count(KEY_END, 0, exc.start)
                raise ValueError(f"{field}: key {at} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        return cls(data, count)

    # -- the byte layout (the key index reads these) -------------------------------------------

    @functools.cached_property
    def buf(self) -> np.ndarray:
        """The bytes as uint8, no copy."""
        return np.frombuffer(self.data, dtype=np.uint8)

    @functools.cached_property
    def ends(self) -> np.ndarray:
        """Position of each key's line feed (int64)."""
        return np.flatnonzero(self.buf == KEY_END[0])

    @functools.cached_property
    def starts(self) -> np.ndarray:
        """Position of each key's first byte (int64)."""
        starts = np.empty(self.nkeys, dtype=np.int64)
        if self.nkeys:
            starts[0] = 0
            starts[1:] = self.ends[:-1] + 1
        return starts

    def longest(self) -> int:
        """Characters in the longest key."""
        if not self.nkeys:
            return 0
        if self.data.isascii():
            return int((self.ends - self.starts).max())
        # Characters are the bytes that do not continue a UTF-8 sequence (0b10xxxxxx).
        heads = (self.buf & 0xC0) != 0x80
        return int(np.add.reduceat(heads, self.starts, dtype=np.int64).max()) - 1  # minus the line feed

    # -- Sequence[str] ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.nkeys

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.nkeys))]
        if i < 0:
            i += self.nkeys
        if not 0 <= i < self.nkeys:
            raise IndexError(f"key {i} out of range [0, {self.nkeys})")
        if self.nkeys == 1:
            return self.data[:-1].decode("utf-8")
        start, end = int(self.starts[i]), int(self.ends[i])
        return self.data[start:end].decode("utf-8")

    def __repr__(self) -> str:
        return f"KeyBatch({self.nkeys} keys, {len(self.data)} bytes)"
