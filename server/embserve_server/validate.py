"""Request validation shared by every entry point (gRPC servicer, explorer API): limits, keys, ids.

Each check raises ``ValueError`` (or :class:`LimitExceededError`) naming the field, the value and
what would be right; the one map in errors.py makes both INVALID_ARGUMENT (HTTP 400).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from embserve_format.bundle import valid_key
from embserve_format.keybatch import KeyBatch

from embserve_server.config import Limits
from embserve_server.errors import LimitExceededError


def check_limit(field_name: str, value: int, limit: int) -> None:
    if value > limit:
        raise LimitExceededError(f"{field_name}: {value} is over the limit of {limit}")


def check_keys(field_name: str, keys: Sequence[str], limits: Limits) -> None:
    """Every key obeys the bundle key rule (non-empty, no line break) and the length limit."""
    if not keys or isinstance(keys, KeyBatch):  # packed keys: checked as a whole by packed_keys()
        return
    longest = max(map(len, keys))
    if longest > limits.max_key_chars:
        raise LimitExceededError(f"{field_name}: a key of {longest} characters is over the limit of {limits.max_key_chars}")
    bad = next((i for i, k in enumerate(keys) if not valid_key(k)), None)
    if bad is not None:
        raise ValueError(f"{field_name}: item {bad} ({keys[bad][:40]!r}) is not a key: keys are non-empty strings without line breaks")


def packed_keys(field_name: str, data: bytes, limits: Limits) -> KeyBatch:
    """The keys of a packed-keys field, checked like :func:`check_keys` plus the key-count limit.

    Raises:
        LimitExceededError: more keys than ``limits.max_keys``, a key over ``limits.max_key_chars``.
        ValueError: bytes that are not whole, non-empty UTF-8 keys (see ``KeyBatch.parse``).
    """
    count = data.count(b"\n")
    check_limit(field_name, count, limits.max_keys)
    batch = KeyBatch.parse(data, field_name)
    # Bytes bound characters: only a batch with that many bytes of keys can hold an over-long key.
    if len(data) - count > limits.max_key_chars:
        longest = batch.longest()
        if longest > limits.max_key_chars:
            raise LimitExceededError(f"{field_name}: a key of {longest} characters is over the limit of {limits.max_key_chars}")
    return batch


def check_ids(field_name: str, ids: np.ndarray, count: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= count):
        bad = int(ids[(ids < 0) | (ids >= count)][0])
        raise ValueError(f"{field_name}: id {bad} is out of range [0, {count})")


def check_pairs(a: Sequence[str], b: Sequence[str], limits: Limits) -> None:
    """Two equally long, non-empty lists of valid keys (word pairs), within the pair limit."""
    if len(a) != len(b):
        raise ValueError(f"a and b: pair lists differ in length ({len(a)} vs {len(b)})")
    if not len(a):
        raise ValueError("a/b: the request holds no pair")
    check_limit("pairs", len(a), limits.max_pairs)
    check_keys("a", a, limits)
    check_keys("b", b, limits)


def check_vectors(field_name: str, values: np.ndarray, dim: int, *, one: bool = False) -> np.ndarray:
    """``values`` (flat float32) as (n, dim) rows: whole vectors (exactly one with ``one``), all finite."""
    if (one and values.size != dim) or values.size % dim:
        expected = f"one {dim}-dimensional vector" if one else f"a whole number of {dim}-dimensional vectors"
        raise ValueError(f"{field_name}: has {values.size} values, expected {expected} (the table's vector size)")
    rows = np.asarray(values, dtype=np.float32).reshape(-1, dim)
    if not np.isfinite(rows).all():
        raise ValueError(f"{field_name}: contains NaN or Inf")
    return rows
