"""The query half of :class:`RemoteKeyedVectors`: gensim 4.4's similarity methods, answered by the server.

Each method keeps gensim's name, arguments, defaults, return type and errors. Searches with an
integer ``topn`` run on the server (``Search``, ``MostSimilarCosmul``, ``RankByCentrality``,
``CloserThan``, the evaluation RPCs); ``topn=None`` and ``clip_start``/``clip_end`` compute gensim's
full similarity array locally over the lazily fetched vectors (small tables only).
"""

from __future__ import annotations

import logging
import warnings
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
from embserve_format.limits import RESTRICT_VOCAB

from embserve_client import gensim_calls as calls
from embserve_client.errors import InvalidArgumentError, UnknownKeyError
from embserve_client.pb import embserve_pb2 as pb

if TYPE_CHECKING:
    from embserve_client.client import Client
    from embserve_client.core import Plan, T

logger = logging.getLogger(__name__)

KEY_TYPES = (str, int, np.integer)
EXTENDED_KEY_TYPES = (str, int, np.integer, np.ndarray)


def ensure_list(value: Any) -> Any:
    """gensim's rule: None -> [], a key or 1-D vector -> [it], a 2-D array -> its rows."""
    if value is None:
        return []
    if isinstance(value, KEY_TYPES) or (isinstance(value, np.ndarray) and len(value.shape) == 1):
        return [value]
    if isinstance(value, np.ndarray) and len(value.shape) == 2:
        return list(value)
    return value


def unitvec(vec: np.ndarray) -> np.ndarray:
    """``vec`` scaled to unit length in its own dtype (zero vectors unchanged), bit for bit gensim's matutils.unitvec.

    gensim takes the length with float64 BLAS (``dnrm2``) and scales in float64 (``dscal`` by ``1 / length``)
    before casting back, so ``similarity(w, w)`` is exactly 1.0 wherever gensim's is; float32 arithmetic
    here gave 0.99999994 (and ``distance`` 5.96e-08) for keys where gensim gives 1.0 and 0.
    """
    wide = np.asarray(vec, dtype=np.float64)
    length = float(np.sqrt(np.dot(wide, wide))) if wide.size else 0.0
    return (wide * (1.0 / length)).astype(vec.dtype) if length > 0.0 else vec


def argsort(x: np.ndarray, topn: int, reverse: bool = False) -> np.ndarray:
    """Indices of the ``topn`` smallest (``reverse``: largest) values, in order."""
    x = -np.asarray(x) if reverse else np.asarray(x)
    if topn >= x.size:
        return np.argsort(x)[:topn]
    part = np.argpartition(x, topn)[:topn]
    return part.take(np.argsort(x.take(part)))


class KeyedVectorsQueries:
    """gensim's query methods; :class:`RemoteKeyedVectors` supplies the rows, the client and the table."""

    if TYPE_CHECKING:
        client: Client
        exact: bool
        _read: dict[str, Any]
        _table: str
        _version: int
        @property
        def vectors(self) -> np.ndarray: ...
        @property
        def norms(self) -> np.ndarray: ...
        @property
        def index_to_key(self) -> list[str]: ...

        def _run(self, plan: Plan[T]) -> T: ...
        def _fetch(self, keys: list[Any], missing: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
        def _rows(self, keys: list[Any], norm: bool = False, missing: str = "") -> np.ndarray: ...
        def get_vector(self, key: Any, norm: bool = False) -> np.ndarray: ...
        def get_mean_vector(self, keys: Any, weights: Any = None, pre_normalize: bool = True, post_normalize: bool = False, ignore_missing: bool = True) -> np.ndarray: ...  # noqa: E501
        def __len__(self) -> int: ...

    def _missing_instead(self, exc: Exception, keys: list[Any], message: str) -> KeyError:
        """gensim's KeyError for the first of ``keys`` that is missing (the server named one)."""
        try:
            self._fetch(keys, message)
        except KeyError as missing:
            return missing
        raise exc  # nothing is missing now (the table changed under us): report the server's error

    # -- nearest neighbours -----------------------------------------------------------------------

    def most_similar(
        self, positive: Any = None, negative: Any = None, topn: int | None = 10, clip_start: int = 0, clip_end: int | None = None,
        restrict_vocab: int | None = None, indexer: Any = None,
    ) -> Any:
        """Top-N most similar keys to the weighted mean of ``positive`` minus ``negative`` (gensim semantics).

        Returns:
            A list of ``(key, similarity)``; with ``topn=None`` gensim's similarity array for all keys.

        Raises:
            KeyError: ``Key 'x' not present in vocabulary``. ValueError: no keys.
        """
        if isinstance(topn, Integral) and topn < 1:
            return []
        positive, negative = ensure_list(positive), ensure_list(negative)
        if indexer is not None:
            warnings.warn("most_similar: indexer is ignored; the server searches with its own index", UserWarning, stacklevel=2)
        keys: list[Any] = []
        weight = np.concatenate((np.ones(len(positive)), -1.0 * np.ones(len(negative))))
        for idx, item in enumerate(positive + negative):
            if isinstance(item, EXTENDED_KEY_TYPES):
                keys.append(item)
            else:
                keys.append(item[0])
                weight[idx] = item[1]
        if not keys:
            raise ValueError("cannot compute mean with no input")
        local = bool(not topn or ((clip_start or clip_end is not None) and not restrict_vocab))
        if local or not all(isinstance(k, str) and k for k in keys):
            return self._most_similar_by_mean(keys, weight, topn, clip_start, clip_end, restrict_vocab, local)
        if len(positive) == len(keys) and (weight == 1.0).all():
            query = pb.Query(positive=keys)
        else:  # gensim's final signed weights, all sent as positive terms
            query = pb.Query(positive=keys, positive_weights=weight.tolist())
        try:
            result = self.client.search([query], topn=topn, exact=self.exact, restrict_vocab=restrict_vocab or 0, **self._read)
        except UnknownKeyError as exc:
            raise self._missing_instead(exc, keys, "Key '{}' not present in vocabulary") from exc
        return [(n.key, float(n.score)) for n in result.neighbors()[0]]

    def _most_similar_by_mean(
        self, keys: list[Any], weight: np.ndarray, topn: int | None, clip_start: int, clip_end: int | None, restrict_vocab: int | None,
        local: bool,
    ) -> Any:
        """most_similar with vectors or row indexes among the terms, or over the fetched table (``local``)."""
        for key in keys:
            if isinstance(key, str) and not key:
                raise KeyError("Key '' not present in vocabulary")
        mean = self.get_mean_vector(keys, weight, pre_normalize=True, post_normalize=True, ignore_missing=False)
        term_keys = [k for k in keys if isinstance(k, KEY_TYPES)]
        all_keys = self._fetch(term_keys, "")[2].tolist() if term_keys else []
        if local:
            clip_end = clip_end or len(self)
            if restrict_vocab:
                clip_start, clip_end = 0, restrict_vocab
            dists = np.dot(self.vectors[clip_start:clip_end], mean) / self.norms[clip_start:clip_end]
            if not topn:
                return dists
            best = argsort(dists, topn=topn + len(all_keys), reverse=True)
            result = [(self.index_to_key[sim + clip_start], float(dists[sim])) for sim in best if (sim + clip_start) not in all_keys]
            return result[:topn]
        found = self.client.search(
            [pb.Query(vector=mean.astype("<f4").tobytes())], topn=topn + len(all_keys), exact=self.exact,  # type: ignore[operator]
            restrict_vocab=restrict_vocab or 0, **self._read,
        ).neighbors()[0]
        return [(n.key, float(n.score)) for n in found if n.id not in all_keys][:topn]

    def similar_by_word(self, word: Any, topn: int | None = 10, restrict_vocab: int | None = None) -> Any:
        """Compatibility alias for similar_by_key()."""
        return self.similar_by_key(word, topn, restrict_vocab)

    def similar_by_key(self, key: Any, topn: int | None = 10, restrict_vocab: int | None = None) -> Any:
        """Top-N most similar keys to ``key`` (see :meth:`most_similar`)."""
        return self.most_similar(positive=[key], topn=topn, restrict_vocab=restrict_vocab)

    def similar_by_vector(self, vector: np.ndarray, topn: int | None = 10, restrict_vocab: int | None = None) -> Any:
        """Top-N most similar keys to a raw vector (see :meth:`most_similar`)."""
        return self.most_similar(positive=[vector], topn=topn, restrict_vocab=restrict_vocab)

    def most_similar_cosmul(self, positive: Any = None, negative: Any = None, topn: int | None = 10, restrict_vocab: int | None = None) -> Any:
        """Top-N by Levy & Goldberg's multiplicative objective (3CosMul), computed on the server as gensim does.

        ``restrict_vocab`` is accepted and, as in gensim 4.4, not used.

        Raises:
            KeyError: ``Key 'x' not present``. ValueError: no positive term. TypeError: a term that is
                neither a key nor a vector.
        """
        if isinstance(topn, Integral) and topn < 1:
            return []
        positive, negative = ensure_list(positive), ensure_list(negative)
        for term in positive + negative:
            if not isinstance(term, (str, np.ndarray)):
                raise TypeError(f"most_similar_cosmul: term {term!r} must be a key (str) or a vector (numpy array)")
        pos_keys = [t for t in positive if isinstance(t, str)]
        neg_keys = [t for t in negative if isinstance(t, str)]
        if "" in pos_keys + neg_keys or not positive:
            self._fetch(pos_keys + neg_keys, "Key '{}' not present")  # gensim's KeyError comes before "no input"
            if not positive:
                raise ValueError("cannot compute similarity with no input")
        if not topn:
            return self._cosmul_dists(positive, negative)
        pos_vec = [t for t in positive if not isinstance(t, str)]
        neg_vec = [t for t in negative if not isinstance(t, str)]
        plan = calls.cosmul_plan(self._table, self._version, pos_keys, neg_keys, pos_vec, neg_vec, topn)
        try:
            return self._run(plan)
        except UnknownKeyError as exc:
            raise self._missing_instead(exc, pos_keys + neg_keys, "Key '{}' not present") from exc

    def _cosmul_dists(self, positive: list[Any], negative: list[Any]) -> np.ndarray:
        vectors, norms = self.vectors, self.norms
        pos = [self.get_vector(w, norm=True) if isinstance(w, str) else w for w in positive]
        neg = [self.get_vector(w, norm=True) if isinstance(w, str) else w for w in negative]
        pos_dists = [((1 + np.dot(vectors, term) / norms) / 2) for term in pos]
        neg_dists = [((1 + np.dot(vectors, term) / norms) / 2) for term in neg]
        return np.prod(pos_dists, axis=0) / (np.prod(neg_dists, axis=0) + 0.000001)  # type: ignore[no-any-return]

    # -- sets of keys -----------------------------------------------------------------------------

    def rank_by_centrality(self, words: list[str], use_norm: bool = True) -> list[tuple[Any, str]]:
        """Keys ranked by cosine to the centroid of them all: ``[(similarity, key), ...]``, most central first.

        Raises:
            ValueError: none of ``words`` is in the table.
        """
        sendable = [w for w in words if isinstance(w, str) and w]
        found, scores = (
            self._run(calls.centrality_plan(self._table, self._version, sendable, use_norm)) if sendable else (np.zeros(0, bool), np.zeros(0))
        )
        used_words = [w for w, ok in zip(sendable, found) if ok]
        if len(used_words) != len(words):
            ignored_words = set(words) - set(used_words)
            logger.warning("vectors for words %s are not present in the model, ignoring these words", ignored_words)
        if not used_words:
            raise ValueError("cannot select a word from an empty list")
        return sorted(zip(scores, used_words), reverse=True)

    def doesnt_match(self, words: list[str]) -> str:
        """The key furthest from the centroid of ``words``."""
        return self.rank_by_centrality(words)[-1][1]

    def closer_than(self, key1: Any, key2: Any) -> list[str]:
        """All keys closer to ``key1`` than ``key2`` is (by cosine distance), in row order.

        Raises:
            KeyError: ``Key 'x' not present``.
        """
        return self._closer_than(key1, key2, count_only=False)[1]

    def _closer_than(self, key1: Any, key2: Any, count_only: bool) -> tuple[int, list[str]]:
        names = [self.index_to_key[k] if isinstance(k, (int, np.integer)) and 0 <= k < len(self) else k for k in (key1, key2)]
        if not all(isinstance(k, str) and k for k in names):
            self._fetch([key1, key2], "Key '{}' not present")
        try:
            return self._run(calls.closer_than_plan(self._table, self._version, names[0], names[1], count_only))
        except (UnknownKeyError, InvalidArgumentError) as exc:
            raise self._missing_instead(exc, [key1, key2], "Key '{}' not present") from exc

    def words_closer_than(self, word1: Any, word2: Any) -> list[str]:
        """Deprecated gensim alias of :meth:`closer_than`."""
        warnings.warn("Use closer_than instead", DeprecationWarning, stacklevel=2)
        return self.closer_than(word1, word2)

    def rank(self, key1: Any, key2: Any) -> int:
        """Rank of ``key2`` among all keys by distance from ``key1`` (1 = closest), counted on the server."""
        return self._closer_than(key1, key2, count_only=True)[0] + 1

    def most_similar_to_given(self, key1: Any, keys_list: list[Any]) -> Any:
        """The key of ``keys_list`` most similar to ``key1`` (one lookup for all of them)."""
        if not len(keys_list):
            return keys_list[int(np.argmax([]))]  # gensim's ValueError for an empty list
        rows = self._rows([key1, *keys_list])
        first = unitvec(rows[0])
        return keys_list[int(np.argmax([np.dot(first, unitvec(r)) for r in rows[1:]]))]

    # -- similarities and distances ---------------------------------------------------------------

    @staticmethod
    def cosine_similarities(vector_1: np.ndarray, vectors_all: np.ndarray) -> np.ndarray:
        """Cosine similarities between one vector (dim,) and each row of ``vectors_all`` (n, dim)."""
        norm = np.linalg.norm(vector_1)
        all_norms = np.linalg.norm(vectors_all, axis=1)
        dot_products = np.dot(vectors_all, vector_1)
        return dot_products / (norm * all_norms)  # type: ignore[no-any-return]

    def distances(self, word_or_vector: Any, other_words: Any = ()) -> np.ndarray:
        """Cosine distances from a key or vector to ``other_words`` (all keys when empty: fetches the table)."""
        input_vector = self.get_vector(word_or_vector) if isinstance(word_or_vector, KEY_TYPES) else word_or_vector
        other_vectors = self.vectors if not other_words else self._rows(list(other_words))
        return 1 - self.cosine_similarities(input_vector, other_vectors)  # type: ignore[no-any-return]

    def distance(self, w1: Any, w2: Any) -> Any:
        """Cosine distance between two keys: ``1 - similarity(w1, w2)``."""
        return 1 - self.similarity(w1, w2)

    def similarity(self, w1: Any, w2: Any) -> Any:
        """Cosine similarity between two keys (float32, from one lookup of both rows).

        Raises:
            KeyError: ``Key 'x' not present``.
        """
        rows = self._rows([w1, w2])
        return np.dot(unitvec(rows[0]), unitvec(rows[1]))

    def n_similarity(self, ws1: list[Any], ws2: list[Any]) -> Any:
        """Cosine similarity between the means of two sets of keys (missing keys ignored, as gensim does)."""
        if not (len(ws1) and len(ws2)):
            raise ZeroDivisionError("At least one of the passed list is empty.")
        mean1 = self.get_mean_vector(ws1, pre_normalize=False)
        mean2 = self.get_mean_vector(ws2, pre_normalize=False)
        return np.dot(unitvec(mean1), unitvec(mean2))

    def relative_cosine_similarity(self, wa: Any, wb: Any, topn: int = 10) -> float:
        """Relative cosine similarity of ``wb`` to ``wa`` among ``wa``'s top-N neighbours (Leeuwenberg et al.)."""
        sims = self.similar_by_word(wa, topn)
        if not sims:
            raise ValueError("Cannot calculate relative cosine similarity without any similar words.")
        return float(self.similarity(wa, wb)) / (sum(sim for _, sim in sims))

    # -- evaluation -------------------------------------------------------------------------------

    def evaluate_word_pairs(
        self, pairs: str, delimiter: str = "\t", encoding: str = "utf8", restrict_vocab: int | None = RESTRICT_VOCAB,
        case_insensitive: bool = True, dummy4unknown: bool = False,
    ) -> tuple[Any, Any, float]:
        """Correlation with human similarity judgements: ``(pearson, spearman, oov_ratio)`` as gensim returns them.

        The file is read here; the similarities of all pairs come from the server in one call.
        """
        restrict = len(self) if restrict_vocab is None else restrict_vocab  # gensim: index_to_key[:None] is every key
        return calls.evaluate_word_pairs(self, pairs, delimiter, encoding, restrict, case_insensitive, dummy4unknown)

    def evaluate_word_analogies(
        self, analogies: str, restrict_vocab: int | None = RESTRICT_VOCAB, case_insensitive: bool = True,
        dummy4unknown: bool = False, similarity_function: str = "most_similar",
    ) -> tuple[float, list[dict[str, Any]]]:
        """Analogy accuracy: ``(score, sections)`` as gensim returns them, the questions answered on the server
        in batches (brute force unless ``exact=False``). ``similarity_function`` is unused, as in gensim.
        """
        restrict = len(self) if restrict_vocab is None else restrict_vocab
        return calls.evaluate_word_analogies(self, analogies, restrict, case_insensitive, dummy4unknown, approximate=not self.exact)
