"""``RemoteKeyedVectors``: gensim 4's read-only ``KeyedVectors`` API over an embserve table.

Existing word-vector code moves to the service by changing one line::

    kv = KeyedVectors.load_word2vec_format("glove.txt")          # before
    kv = RemoteKeyedVectors("localhost:50051", table="glove")    # after
    kv.most_similar("cat"), kv["cat"], kv.doesnt_match([...]), kv.evaluate_word_analogies(path)

Method names, argument names, defaults, return types and errors are gensim 4.4's. Searches run on
the server (brute force by default, as gensim does; ``exact=False`` uses the table's index);
``vectors``, ``index_to_key`` and ``topn=None`` fetch the table lazily, once, up to a size limit.
Anything that would modify the table raises :class:`ReadOnlyTableError`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from embserve_client import gensim_calls as calls
from embserve_client.client import Client
from embserve_client.core import Plan, T
from embserve_client.errors import InvalidArgumentError
from embserve_client.kv_queries import KEY_TYPES, KeyedVectorsQueries, unitvec

logger = logging.getLogger(__name__)

DEFAULT_MAX_FETCH_BYTES = 256 << 20  # largest table `vectors` / topn=None will download (GloVe 400k x 50 is 80 MB)


class ReadOnlyTableError(TypeError, NotImplementedError):
    """A ``KeyedVectors`` method that would modify the table: tables served by embserve are read-only."""


def _read_only(name: str) -> Any:
    def method(self: RemoteKeyedVectors, *args: Any, **kwargs: Any) -> Any:
        raise ReadOnlyTableError(f"{name}: {self} is a read-only embserve table; publish a new table version instead")

    method.__name__ = name
    method.__doc__ = f"Not supported: ``{name}`` would modify the table (raises :class:`ReadOnlyTableError`)."
    return method


class RemoteKeyedVectors(KeyedVectorsQueries):
    """gensim 4 ``KeyedVectors`` reads answered by an embserve server.

    Args:
        target_or_client: ``HOST:PORT`` (a :class:`Client` is opened and owned) or an open :class:`Client`.
        table: table name; None = the server's default table.
        version: read this table version; None = the version being served.
        version_label: read the version this label names ("stable"; not with ``version``). It is
            resolved once, at the first read, so the object's answers never mix versions when the
            label moves; open a new one to follow the label.
        exact: brute-force searches (gensim's answers); False uses the table's approximate index.
        max_fetch_bytes: largest table that ``vectors``, ``get_normed_vectors()`` and ``topn=None`` download.
        **client_options: keyword options of :class:`Client` when a target is given.

    Raises:
        TypeError: ``target_or_client`` is neither a string nor a :class:`Client`.
        InvalidArgumentError: both ``version`` and ``version_label``.
    """

    def __init__(
        self,
        target_or_client: str | Client,
        table: str | None = None,
        version: int | None = None,
        *,
        version_label: str | None = None,
        exact: bool = True,
        max_fetch_bytes: int = DEFAULT_MAX_FETCH_BYTES,
        **client_options: Any,
    ) -> None:
        if version is not None and version_label is not None:
            raise InvalidArgumentError(f"version {version} and version_label {version_label!r}: give one or the other")
        if isinstance(target_or_client, Client):
            self.client, self._owns_client = target_or_client, False
        elif isinstance(target_or_client, str):
            self.client, self._owns_client = Client(target_or_client, **client_options), True
        else:
            raise TypeError(f"target_or_client: expected 'HOST:PORT' or a Client, got {type(target_or_client).__name__}")
        self._table, self._pinned, self._label = table or "", version or 0, version_label or ""
        self.exact = exact
        self.max_fetch_bytes = max_fetch_bytes
        self._info: Any = None
        self._shape: tuple[int, int] | None = None
        self._index_to_key: list[str] | None = None
        self._key_to_index: dict[str, int] | None = None
        self._vectors: np.ndarray | None = None
        self._norms: np.ndarray | None = None

    def close(self) -> None:
        """Close the client if this object opened it."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> RemoteKeyedVectors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, plan: Plan[T]) -> T:
        return calls.run(self.client, plan)

    @property
    def _version(self) -> int:
        """The version every read asks for: as given, the label's (asked once), or 0 (the serving one)."""
        if self._label and not self._pinned:
            self._pinned = self._run(calls.label_version_plan(self._table, self._label))
        return self._pinned

    @property
    def _read(self) -> dict[str, Any]:
        """The table and version arguments of the client calls."""
        version = self._version
        return {"table": self._table or None, **({"version": version} if version else {})}

    # -- metadata and lazily fetched parts --------------------------------------------------------

    @property
    def info(self) -> Any:
        """The table's :class:`TableInfo` (fetched once)."""
        if self._info is None:
            self._info = self.client.table_info(self._table or None)
        return self._info

    @property
    def shape(self) -> tuple[int, int]:
        """(count, vector_size) of the version read (fetched once)."""
        if self._shape is None:
            if self._version:  # table_info describes the newest version; ask the pinned one itself
                count = self._run(calls.count_plan(self._table, self._version))
                dim = self.client.lookup(ids=[0], **self._read).vectors.shape[1] if count else self.info.vector_size
                self._shape = (count, int(dim))
            else:
                self._shape = (int(self.info.count), int(self.info.vector_size))
        return self._shape

    @property
    def vector_size(self) -> int:
        return self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def __str__(self) -> str:
        return f"{self.__class__.__name__}<vector_size={self.vector_size}, {len(self)} keys>"

    @property
    def index_to_key(self) -> list[str]:
        """Keys in row order (fetched once, a page per call)."""
        if self._index_to_key is None:
            self._index_to_key = self._run(calls.list_keys_plan(self._table, self._version))
        return self._index_to_key

    @property
    def key_to_index(self) -> dict[str, int]:
        if self._key_to_index is None:
            self._key_to_index = {k: i for i, k in enumerate(self.index_to_key)}
        return self._key_to_index

    @property
    def vectors(self) -> np.ndarray:
        """All raw vectors, (count, vector_size) float32 read-only, fetched once.

        Raises:
            ValueError: the table is larger than ``max_fetch_bytes``.
        """
        if self._vectors is None:
            size = len(self) * self.vector_size * 4
            if size > self.max_fetch_bytes:
                raise ValueError(
                    f"vectors: table {self.info.name!r} holds {size / 2**20:.0f} MiB of vectors, over max_fetch_bytes "
                    f"({self.max_fetch_bytes / 2**20:.0f} MiB); query the server (most_similar with an integer topn, "
                    "get_vector, ...) or raise max_fetch_bytes"
                )
            vectors = np.array(self.client.lookup(ids=range(len(self)), **self._read).vectors)
            vectors.flags.writeable = False
            self._vectors = vectors
        return self._vectors

    @property
    def norms(self) -> np.ndarray:
        if self._norms is None:
            self._norms = np.linalg.norm(self.vectors, axis=1)
        return self._norms

    def get_normed_vectors(self) -> np.ndarray:
        """All vectors at unit length (fetched as :attr:`vectors`)."""
        return self.vectors / self.norms[..., np.newaxis]  # type: ignore[no-any-return]

    def fill_norms(self, force: bool = False) -> None:
        """No-op (norms live on the server); ``force=True`` would recompute them in place: refused."""
        if force:
            raise ReadOnlyTableError(f"fill_norms(force=True): {self} is a read-only embserve table")

    # -- rows -------------------------------------------------------------------------------------

    def _fetch(self, keys: list[Any], missing: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw rows of keys (str) and row indexes (int), zero rows where missing: (rows, found, ids).

        ``missing`` is gensim's KeyError message for the first missing item, or "" to report instead.
        """
        n, dim = len(keys), self.vector_size
        rows, found, ids = np.zeros((n, dim), np.float32), np.zeros(n, bool), np.full(n, -1, np.int64)
        named = [i for i, k in enumerate(keys) if isinstance(k, str) and k]
        indexed = [i for i, k in enumerate(keys) if isinstance(k, (int, np.integer)) and 0 <= k < len(self)]
        for pos, kwargs in ((named, {"keys": [keys[i] for i in named]}), (indexed, {"ids": [int(keys[i]) for i in indexed]})):
            if pos:
                got = self.client.lookup(**kwargs, missing="zero", **self._read)  # type: ignore[arg-type]
                rows[pos], found[pos], ids[pos] = got.vectors, got.found, got.ids
        if missing and not found.all():
            raise KeyError(missing.format(keys[int(np.argmin(found))]))
        return rows, found, ids

    def _rows(self, keys: list[Any], norm: bool = False, missing: str = "Key '{}' not present") -> np.ndarray:
        rows = self._fetch(keys, missing)[0]
        return rows / np.linalg.norm(rows, axis=1)[:, None] if norm else rows

    def __getitem__(self, key_or_keys: Any) -> np.ndarray:
        """Vector of a key (1-D), or of a list of keys (2-D)."""
        if isinstance(key_or_keys, KEY_TYPES):
            return self.get_vector(key_or_keys)
        keys = list(key_or_keys)
        if not keys:
            return np.vstack([])  # gensim's ValueError for no keys
        rows = self._rows(keys)
        rows.flags.writeable = False
        return rows

    def get_vector(self, key: Any, norm: bool = False) -> np.ndarray:
        """The key's vector (unit length with ``norm``), read-only.

        Raises:
            KeyError: ``Key 'x' not present``.
        """
        result = self._rows([key], norm=norm)[0]
        result.setflags(write=False)
        return result

    def get_index(self, key: Any, default: Any = None) -> int:
        """Row of ``key`` (an int in range stands for itself); ``default`` or KeyError when absent."""
        if self._key_to_index is not None and key in self._key_to_index:
            return self._key_to_index[key]
        row = int(self._fetch([key], "")[2][0]) if isinstance(key, str) and key else -1
        if row >= 0:
            return row
        if isinstance(key, (int, np.integer)) and 0 <= key < len(self):
            return int(key)
        if default is not None:
            return default  # type: ignore[no-any-return]
        raise KeyError(f"Key '{key}' not present")

    def has_index_for(self, key: Any) -> bool:
        return self.get_index(key, -1) >= 0

    def __contains__(self, key: Any) -> bool:
        return self.has_index_for(key)

    def get_mean_vector(
        self, keys: Any, weights: Any = None, pre_normalize: bool = True, post_normalize: bool = False, ignore_missing: bool = True
    ) -> np.ndarray:
        """Weighted mean of key vectors and raw vectors (gensim semantics; one lookup for all keys).

        Raises:
            ValueError: no keys, or ``weights`` of another length. KeyError: a missing key unless ``ignore_missing``.
        """
        if len(keys) == 0:
            raise ValueError("cannot compute mean with no input")
        if isinstance(weights, list):
            weights = np.array(weights, dtype=np.float32)
        if weights is None:
            weights = np.ones(len(keys), dtype=np.float32)
        if len(keys) != weights.shape[0]:  # weights is a 1-D numpy array
            raise ValueError("keys and weights array must have same number of elements")
        items = [None if isinstance(k, np.ndarray) else k for k in keys]
        rows, found, _ = self._fetch(items, "") if any(i is not None for i in items) else (None, np.zeros(len(keys), bool), None)
        if rows is not None and pre_normalize:
            with np.errstate(invalid="ignore", divide="ignore"):
                rows = rows / np.linalg.norm(rows, axis=1)[:, None]
        mean: np.ndarray = np.zeros(self.vector_size, np.float32)
        total_weight = 0
        for idx, key in enumerate(keys):
            if isinstance(key, np.ndarray):
                mean += weights[idx] * key
                total_weight += abs(weights[idx])
            elif found[idx]:
                mean += weights[idx] * rows[idx]  # type: ignore[index]
                total_weight += abs(weights[idx])
            elif not ignore_missing:
                raise KeyError(f"Key '{key}' not present in vocabulary")
        if total_weight > 0:
            mean = mean / total_weight
        if post_normalize:
            mean = unitvec(mean).astype(np.float32)
        return mean

    # -- gensim's mutators: refused ---------------------------------------------------------------

    add_vector = _read_only("add_vector")
    add_vectors = _read_only("add_vectors")
    __setitem__ = _read_only("__setitem__")
    save = _read_only("save")
    save_word2vec_format = _read_only("save_word2vec_format")
    init_sims = _read_only("init_sims")
    unit_normalize_all = _read_only("unit_normalize_all")
    sort_by_descending_frequency = _read_only("sort_by_descending_frequency")
    resize_vectors = _read_only("resize_vectors")
    set_vecattr = _read_only("set_vecattr")
    allocate_vecattrs = _read_only("allocate_vecattrs")
    intersect_word2vec_format = _read_only("intersect_word2vec_format")

