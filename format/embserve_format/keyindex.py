"""The compact key index: keys -> row ids without a Python object per key (bundle file ``keys.idx``).

Layout in memory: the bytes of ``keys.txt`` (key i is ``blob[offsets[i]:offsets[i+1]-1]``, each
key followed by its newline), ``offsets`` (count + 1, uint32 or uint64), the keys' 31-bit hashes
sorted (uint32) and ``order``, the row of each sorted hash (int32 or int64). That is 12 bytes per
key (16 beyond 4 GiB of key text) against ~150 bytes for a Python dict of str. All of it is
memory-mapped from the bundle, so worker processes share the pages and no object exists per key.
A batch of keys is one window read per key plus one byte comparison: a fixed number of numpy calls.

The hash is deterministic (it is stored in the bundle) and costs one C call per key in plain
Python as well as a handful of numpy calls per batch: ``int.from_bytes(utf8, "little") * M % P``
with the prime ``P = 2_040_109_507``, the Rabin-Karp polynomial of the bytes in base 256, times a
mixing constant ``M`` (hash 2; hash 1, of the first keys.idx files, has M = 1, which leaves every
key of up to 3 bytes below 2**24: they all shared the lowest hash bucket). Every answer compares the
key's bytes, so a hash collision costs a comparison, never a wrong row.

A batch finds each hash through the buckets of hashes sharing their top bits (~3 a bucket, 4 bytes
a bucket derived at load): a window of 8 sorted hashes from the bucket's start is one cache line,
where a binary search over all of them misses the cache at every level (1,024 keys not asked
before: 40 us against 77 us on GloVe's 400k).

Building, writing and loading the ``keys.idx`` file: :mod:`embserve_format.keyfile`.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any

import numpy as np

from embserve_format.keybatch import KeyBatch

_P = 2_040_109_507  # a prime far from powers of two: the powers of 256 modulo it look random
HASH_MULTIPLIERS = {1: 1, 2: 1_103_515_245}  # hash id -> M in int.from_bytes(utf8, "little") * M % P
HASH_ID = 2  # what build() writes; load() reads every id above
_WINDOW = 8  # sorted hashes read per key of a batch from its bucket's start (one 32-byte line)
_WINDOW_STEPS = np.arange(_WINDOW, dtype=np.uint32)
_VERIFY_CHUNK = 1 << 16  # keys per step when checking a whole index (bounded temporaries)
_SCALAR_BATCH = 8  # fewer keys than this: one at a time beats the batch's fixed numpy calls


class KeyIndexError(ValueError):
    """A key index file is malformed or disagrees with keys.txt; the message says how."""


def _pow_table(maxlen: int) -> np.ndarray:
    """256**j mod P for j in [0, maxlen], as uint64 (a byte times one stays below 2**39)."""
    out = np.empty(maxlen + 1, dtype=np.uint64)
    v = 1
    for j in range(maxlen + 1):
        out[j] = v
        v = v * 256 % _P
    return out


_WINDOW_BYTES = 1 << 16  # batches up to this many bytes take the weight-table path
_ARANGE = np.arange(_WINDOW_BYTES, dtype=np.int64)


@functools.cache
def _weights(mix: int) -> tuple[np.ndarray, np.ndarray]:
    """256**g and M * 256**-g modulo P for g < _WINDOW_BYTES (uint64, 1 MiB in all, built on first use)."""
    w = np.empty(_WINDOW_BYTES, dtype=np.uint64)
    inv = np.empty(_WINDOW_BYTES, dtype=np.uint64)
    back = pow(256, -1, _P)
    a, b = 1, mix % _P
    for g in range(_WINDOW_BYTES):
        w[g], inv[g] = a, b
        a, b = a * 256 % _P, b * back % _P
    return w, inv


def key_hash(encoded: bytes, hash_id: int = HASH_ID) -> int:
    """The stored hash of one UTF-8 encoded key (see the module docstring)."""
    return int.from_bytes(encoded, "little") * HASH_MULTIPLIERS[hash_id] % _P


class KeyIndex:
    """Keys -> row ids and ids -> keys over the bytes of keys.txt.

    ``get``/``__getitem__``/``in`` and :meth:`ids_for` answer like a ``dict[str, int]`` would;
    :attr:`keys` is the id -> key direction. Build with :func:`build`, or :func:`load` a bundle's.
    """

    def __init__(
        self, blob: Any, offsets: np.ndarray, hashes: np.ndarray, order: np.ndarray, maxlen: int, owners: Sequence[Any] = (), hash_id: int = HASH_ID
    ) -> None:
        self.hash_id = hash_id
        self._mix = HASH_MULTIPLIERS[hash_id]
        self._blob_buf = blob  # bytes or mmap: kept alive for the views below
        self.blob = np.frombuffer(blob, dtype=np.uint8)
        self.offsets = offsets
        self.hashes = hashes
        self.order = order
        self.count = len(offsets) - 1
        self.maxlen = maxlen
        self._pow = _pow_table(maxlen)
        self._owners = list(owners)  # mmaps behind offsets/hashes/order
        # Plain-Python views for the one-key path: a memoryview item is several times cheaper than numpy's.
        self._bytes = memoryview(blob)
        self._off = memoryview(offsets).cast("B").cast("Q" if offsets.dtype.itemsize == 8 else "I")  # type: ignore[arg-type]  # ndarray is a buffer
        self._hashes = memoryview(hashes).cast("B").cast("I")  # type: ignore[arg-type]  # ndarray is a buffer
        self._order = memoryview(order).cast("B").cast("q" if order.dtype.itemsize == 8 else "i")  # type: ignore[arg-type]  # ndarray is a buffer
        # Where each run of hashes sharing their top bits starts (2-4 rows a run, ~1 byte a key,
        # derived here, not stored): one key's bisect then spans a few rows, not all of them.
        bits = max(1, (self.count // 4).bit_length())
        self._bshift = max(0, 31 - bits)
        self._bucket = np.searchsorted(hashes, np.arange((1 << (31 - self._bshift)) + 1, dtype=np.uint64) << np.uint64(self._bshift)).astype(np.uint32 if self.count < (1 << 32) else np.uint64)
        self._buckets = memoryview(self._bucket).cast("B").cast("I" if self._bucket.dtype.itemsize == 4 else "Q")  # type: ignore[arg-type]  # ndarray is a buffer
        self.keys = KeyList(self)

    # -- one key ------------------------------------------------------------------------------

    def get(self, key: str, default: int | None = None) -> int | None:
        """Row id of ``key``, or ``default`` when it is not in the table.

        One key in plain Python (the commonest call): no numpy, every step inlined.
        """
        try:
            enc = key.encode("utf-8", "surrogatepass")
        except AttributeError:
            return default  # not a str: never a key
        n = len(enc)
        if not 0 < n <= self.maxlen:
            return default
        h = int.from_bytes(enc, "little") * self._mix % _P
        hashes, order, off, text, buckets = self._hashes, self._order, self._off, self._blob_buf, self._buckets
        b = h >> self._bshift
        pos = bisect.bisect_left(hashes, h, buckets[b], buckets[b + 1])
        end = self.count
        while pos < end and hashes[pos] == h:
            i = order[pos]
            a = off[i]
            if off[i + 1] - a == n + 1 and text[a : a + n] == enc:
                return i
            pos += 1
        return default

    def _find(self, enc: bytes) -> int:
        """Row of the encoded key, or -1 (one key at a time: a hash shared with an earlier key)."""
        i = self.get(enc.decode("utf-8", "surrogatepass"), -1)
        return -1 if i is None else i

    def __getitem__(self, key: str) -> int:
        i = self.get(key)
        if i is None:
            raise KeyError(key)
        return i

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        """Bytes of the index structures (offsets, hashes, order, buckets), not counting the key text."""
        return int(self.offsets.nbytes + self.hashes.nbytes + self.order.nbytes + self._bucket.nbytes)

    # -- many keys ----------------------------------------------------------------------------

    def ids_for(self, keys: Sequence[str]) -> np.ndarray:
        """Row ids of ``keys`` as int64, -1 for keys not in the table: numpy calls per batch, not per key.

        A :class:`~embserve_format.keybatch.KeyBatch` (packed keys off the wire) is read as it is;
        other keys are packed first (one join and one encode).
        """
        m = len(keys)
        if m < _SCALAR_BATCH:
            return np.fromiter(map(self.get, keys, repeat(-1)), dtype=np.int64, count=m)
        batch = keys if isinstance(keys, KeyBatch) else KeyBatch.of(keys)
        if batch is None:  # a non-str key or one holding a newline (never a table key): one at a time
            return np.fromiter(map(self.get, keys, repeat(-1)), dtype=np.int64, count=m)
        if len(batch.data) > _WINDOW_BYTES:
            return self._lookup(batch.buf, batch.starts, batch.ends - batch.starts)
        return self._lookup_request(batch.buf, batch.starts, batch.ends)

    def _hash(self, buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, rel: np.ndarray | None = None) -> np.ndarray:
        """Hashes (uint32) of the keys ``buf[starts[i]:starts[i]+lens[i]]``; ``buf`` is "key\\n" repeated.

        ``rel``: each byte's position within its key (computed here when not given).
        """
        if rel is None:
            rel = _positions(buf, starts, lens)
        if len(lens) and int(lens.max()) > self.maxlen:  # over-long keys (refused by the caller): any hash
            rel, lens = np.minimum(rel, self.maxlen), np.minimum(lens, self.maxlen)
        vals = np.multiply(buf, self._pow[rel], dtype=np.uint64)
        sums = np.add.reduceat(vals, starts) - np.uint64(10) * self._pow[lens]  # minus each key's "\\n"
        return (sums % np.uint64(_P) * np.uint64(self._mix) % np.uint64(_P)).astype(np.uint32)

    def _lookup(self, buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Rows of the keys ``buf[starts[i]:starts[i]+lens[i]]``, -1 where absent.

        Each hash found in its bucket's window (:meth:`_hash_slots`), then every candidate's text is
        gathered in the layout of ``buf`` and compared with it in one pass: when all keys are
        present that is the answer.
        """
        rel = _positions(buf, starts, lens)
        h = self._hash(buf, starts, lens, rel)
        pos = self._hash_slots(h)
        cand = self.order[pos].astype(np.int64)
        begin = self.offsets[cand].astype(np.int64)
        ok = (self.hashes[pos] == h) & (self.offsets[cand + 1].astype(np.int64) - begin - 1 == lens) & (lens > 0) & (lens <= self.maxlen)
        where = rel + np.repeat(begin, lens + 1)
        np.minimum(where, len(self.blob) - 1, out=where)  # a candidate of another length may run off the end
        differ = self.blob[where] != buf
        if ok.all() and not differ.any():
            return cand
        ok &= ~np.logical_or.reduceat(differ, starts)
        out = np.where(ok, cand, -1)
        # Another key holding the same hash came first: rare (colliding hashes), one at a time.
        for a in np.flatnonzero(~ok & (self.hashes[pos] == h) & (lens > 0) & (lens <= self.maxlen)).tolist():
            out[a] = self._find(bytes(buf[starts[a] : starts[a] + lens[a]]))
        return out

    def _lookup_request(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """:meth:`_lookup` for a request-sized batch (up to 64 KiB of keys), in fewer numpy calls.

        Any length is answered right: an empty or over-long key matches no candidate's text
        (keys hold no line break, so a text of another length differs at its line break).

        Each byte is weighted by 256**(its position in ``buf``) from a table, so no per-byte
        position within the key is needed: the key's hash is its segment sum times the inverse
        weight of its first byte (and M). Each hash is found in a window of its bucket (see the
        module docstring). The candidates' text (each with its line break) is gathered in the
        layout of ``buf`` and compared in one pass, which also compares the lengths.
        """
        weight, inverse = _weights(self._mix)
        n = len(buf)
        sums = np.add.reduceat(np.multiply(buf, weight[:n], dtype=np.uint64), starts) - np.uint64(10) * weight[ends]
        h = ((sums % np.uint64(_P)) * inverse[starts] % np.uint64(_P)).astype(np.uint32)
        pos = self._hash_slots(h)
        cand = self.order[pos].astype(np.int64)
        where = np.repeat(self.offsets[cand].astype(np.int64) - starts, ends - starts + 1)
        where += _ARANGE[:n]
        np.minimum(where, len(self.blob) - 1, out=where)  # a longer candidate near the end of the text
        differ = self.blob[where] != buf
        if not differ.any():
            return cand
        bad = np.flatnonzero(np.logical_or.reduceat(differ, starts))
        cand[bad] = -1
        # Absent, or another key with the same hash sorted first (rare): those one at a time.
        for a in bad[self.hashes[pos[bad]] == h[bad]].tolist():
            cand[a] = self._find(bytes(buf[starts[a] : ends[a]]))
        return cand

    def _hash_slots(self, h: np.ndarray) -> np.ndarray:
        """Where each hash is (or would be) in the sorted hashes, clipped to the last row.

        The hashes below ``h`` among the 8 from its bucket's start, counted: hashes past the bucket
        are larger (sorted by their top bits) and hashes before it smaller, so a window moved back
        from the end of the array counts right too. A key with 8 smaller ones before it (a crowded
        bucket, ~1% of keys) is binary-searched instead.
        """
        if self.count < _WINDOW:
            return np.minimum(np.searchsorted(self.hashes, h), self.count - 1)
        start = np.minimum(self._bucket[h >> np.uint32(self._bshift)], np.uint32(self.count - _WINDOW))
        below = self.hashes[start[:, None] + _WINDOW_STEPS] < h[:, None]  # (m, 8) bools: 8 bytes a row
        counts = np.bitwise_count(below.view(np.uint64)).ravel()  # one popcount per row
        pos = start.astype(np.int64) + counts
        crowded = np.flatnonzero(counts == _WINDOW)
        if len(crowded):
            pos[crowded] = np.searchsorted(self.hashes, h[crowded])
        np.minimum(pos, self.count - 1, out=pos)
        return pos

    # -- ids -> keys --------------------------------------------------------------------------

    def keys_of(self, ids: np.ndarray) -> list[str]:
        """Keys of valid row ``ids`` (any shape, flattened), in order: one decode for the batch."""
        flat = np.asarray(ids, dtype=np.int64).ravel()
        if not len(flat):
            return []
        begin = self.offsets[flat].astype(np.int64)
        lens = self.offsets[flat + 1].astype(np.int64) - begin  # each with its newline
        cum = np.cumsum(lens)
        idx = np.arange(int(cum[-1]), dtype=np.int64) + np.repeat(begin - (cum - lens), lens)
        return self.blob[idx].tobytes().decode("utf-8").split("\n")[:-1]

    def key(self, i: int) -> str:
        """The key of row ``i`` (0 <= i < count)."""
        off = self._off
        return str(self._bytes[off[i] : off[i + 1] - 1], "utf-8")

    # -- checks -------------------------------------------------------------------------------

    def verify(self, where: str) -> None:
        """Check the index against the key text: every key finds its own row, every row once.

        Raises:
            KeyIndexError: naming ``where`` and the first disagreement.
        """
        off, n = self.offsets, self.count
        if n < 1 or int(off[0]) != 0 or int(off[-1]) != len(self.blob):
            raise KeyIndexError(f"{where}: offsets do not span keys.txt ({len(self.blob)} bytes)")
        lines = int(np.count_nonzero(self.blob == 10))
        if lines != n:
            raise KeyIndexError(f"{where}: keys.txt holds {lines} lines, the key index {n}")
        if len(self.hashes) != n or len(self.order) != n:
            raise KeyIndexError(f"{where}: {len(self.hashes)} hashes and {len(self.order)} rows for {n} keys")
        if n > 1 and not (self.hashes[1:] >= self.hashes[:-1]).all():
            raise KeyIndexError(f"{where}: the key hashes are not sorted")
        for a in range(0, n, _VERIFY_CHUNK):
            b = min(n, a + _VERIFY_CHUNK)
            ends = off[a + 1 : b + 1].astype(np.int64) - 1
            good = self.blob[ends] == 10
            if not good.all():
                raise KeyIndexError(f"{where}: key {a + int(np.argmin(good))} does not end at a line break of keys.txt")
        # Every key of the text maps back to its own row: duplicates, another table's index or a
        # wrong hash all fail here. With n keys each found at its own row, order is a permutation.
        for a in range(0, n, _VERIFY_CHUNK):
            b = min(n, a + _VERIFY_CHUNK)
            base = int(off[a])
            starts = off[a:b].astype(np.int64) - base
            got = self._lookup(self.blob[base : int(off[b])], starts, off[a + 1 : b + 1].astype(np.int64) - base - 1 - starts)
            wrong = np.flatnonzero(got != np.arange(a, b))
            if len(wrong):
                i, j = a + int(wrong[0]), int(got[wrong[0]])
                if j >= 0 and self.key(j) == self.key(i):
                    raise KeyIndexError(f"{where}: duplicate key {self.key(i)!r} at rows {j} and {i}")
                raise KeyIndexError(f"{where}: key {self.key(i)!r} (row {i}) maps to row {j} in the key index, not to its own row")


def _positions(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Each byte's position within its key ("key\\n" repeated: the separator gets the key's length)."""
    return np.arange(len(buf), dtype=np.int64) - np.repeat(starts, lens + 1)


class KeyList(Sequence[str]):
    """The id -> key direction of a :class:`KeyIndex`, indexable like the old object array of keys.

    ``keys[i]`` is a str, ``keys[slice]`` and ``keys[array]`` object arrays (of that shape).
    """

    def __init__(self, index: KeyIndex) -> None:
        self._index = index

    def __len__(self) -> int:
        return self._index.count

    def __getitem__(self, item: Any) -> Any:
        ix = self._index
        if isinstance(item, (int, np.integer)):
            i = int(item)
            if i < 0:
                i += ix.count
            if not 0 <= i < ix.count:
                raise IndexError(f"key id {item} out of range [0, {ix.count})")
            return ix.key(i)
        if isinstance(item, slice):
            item = np.arange(ix.count)[item]  # an object array, like the object array of keys this replaces
        ids = np.asarray(item, dtype=np.int64)
        out = np.empty(ids.shape, dtype=object)
        out.ravel()[:] = ix.keys_of(ids)
        return out

    def __iter__(self) -> Iterator[str]:
        step = _VERIFY_CHUNK
        for a in range(0, self._index.count, step):
            yield from self._index.keys_of(np.arange(a, min(self._index.count, a + step)))
