"""Calls behind :class:`RemoteKeyedVectors`: the gensim-support RPCs and gensim's evaluation files.

Each ``*_plan`` builds requests for one of the RPCs added for gensim (``ListKeys``,
``MostSimilarCosmul``, ``RankByCentrality``, ``CloserThan``, ``EvaluateWordPairs``,
``EvaluateWordAnalogies``) and parses the answer, split into calls under the server's limits;
:func:`run` drives a plan on a :class:`Client`. The evaluation functions read gensim's test-file
formats as gensim 4.4 does (:mod:`embserve_format.gensim_files`) and send the parsed lines to the server in batches.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from embserve_format.arrays import LE_F32
from embserve_format.gensim_files import read_analogies, read_word_pairs
from embserve_format.limits import MAX_PAIRS_PER_CALL

from embserve_client.client import Client
from embserve_client.core import Plan, T
from embserve_client.pb import embserve_pb2 as pb

logger = logging.getLogger(__name__)


def run(client: Client, plan: Plan[T]) -> T:
    """Drive ``plan`` with ``client``'s blocking calls (errors become the client's exceptions)."""
    return client._run(plan)


def _vector_bytes(vectors: Sequence[np.ndarray]) -> bytes:
    return b"".join(np.ascontiguousarray(v, dtype=LE_F32).tobytes() for v in vectors)


def list_keys_plan(table: str, version: int) -> Plan[list[str]]:
    """Every key of the table in row order, one page (the server's max keys) per call.

    Later pages ask for the version that answered the first, so a reload between pages cannot mix versions.
    """
    keys: list[str] = []
    while True:
        resp = yield "ListKeys", pb.ListKeysRequest(table=table, version=version, offset=len(keys))
        version = resp.version
        keys.extend(resp.keys)
        if len(keys) >= resp.count or not resp.keys:
            return keys


def count_plan(table: str, version: int) -> Plan[int]:
    """Rows in the table version (a one-key ListKeys page)."""
    resp = yield "ListKeys", pb.ListKeysRequest(table=table, version=version, limit=1)
    return int(resp.count)


def cosmul_plan(
    table: str, version: int, positive: list[str], negative: list[str], pos_vectors: list[np.ndarray], neg_vectors: list[np.ndarray], topn: int
) -> Plan[list[tuple[str, float]]]:
    req = pb.MostSimilarCosmulRequest(
        table=table, version=version, positive=positive, negative=negative, topn=topn,
        positive_vectors=_vector_bytes(pos_vectors), negative_vectors=_vector_bytes(neg_vectors),
    )
    resp = yield "MostSimilarCosmul", req
    scores = np.frombuffer(resp.scores, dtype=LE_F32)
    return [(k, float(s)) for k, s in zip(resp.keys, scores)]


def centrality_plan(table: str, version: int, keys: list[str], use_norm: bool) -> Plan[tuple[np.ndarray, np.ndarray]]:
    """(found flags, float32 scores of the found keys in request order)."""
    resp = yield "RankByCentrality", pb.RankByCentralityRequest(table=table, version=version, keys=keys, raw=not use_norm)
    return np.frombuffer(resp.found, dtype=np.uint8).astype(bool), np.frombuffer(resp.scores, dtype=LE_F32).astype(np.float32)


def closer_than_plan(table: str, version: int, key1: str, key2: str, count_only: bool) -> Plan[tuple[int, list[str]]]:
    resp = yield "CloserThan", pb.CloserThanRequest(table=table, version=version, key1=key1, key2=key2, count_only=count_only)
    return int(resp.count), list(resp.keys)


def word_pairs_plan(
    table: str, version: int, pairs: Sequence[tuple[str, str]], restrict_vocab: int, case_insensitive: bool
) -> Plan[tuple[np.ndarray, np.ndarray]]:
    """(found flags, float32 cosine per pair), batched under the server's pair limit."""
    found, scores = [], []
    for start in range(0, len(pairs), MAX_PAIRS_PER_CALL):
        chunk = pairs[start : start + MAX_PAIRS_PER_CALL]
        resp = yield "EvaluateWordPairs", pb.EvaluateWordPairsRequest(
            table=table, version=version, a=[a for a, _ in chunk], b=[b for _, b in chunk],
            restrict_vocab=restrict_vocab, case_insensitive=case_insensitive,
        )
        found.append(np.frombuffer(resp.found, dtype=np.uint8).astype(bool))
        scores.append(np.frombuffer(resp.scores, dtype=LE_F32))
    return np.concatenate(found), np.concatenate(scores).astype(np.float32)


def word_analogies_plan(
    table: str, version: int, quads: Sequence[tuple[str, ...]], restrict_vocab: int, case_insensitive: bool, approximate: bool
) -> Plan[tuple[np.ndarray, np.ndarray, str]]:
    """(found flags, correct flags, search name), batched under the server's question limit.

    Google's 19,544 questions go in one call: one BLAS batch on the server instead of five.
    """
    found, correct, search = [], [], "exact"
    for start in range(0, len(quads), MAX_PAIRS_PER_CALL):
        chunk = quads[start : start + MAX_PAIRS_PER_CALL]
        a, b, c, expected = (list(col) for col in zip(*chunk))
        resp = yield "EvaluateWordAnalogies", pb.EvaluateWordAnalogiesRequest(
            table=table, version=version, a=a, b=b, c=c, expected=expected,
            restrict_vocab=restrict_vocab, case_insensitive=case_insensitive, approximate=approximate,
        )
        found.append(np.frombuffer(resp.found, dtype=np.uint8).astype(bool))
        correct.append(np.frombuffer(resp.correct, dtype=np.uint8).astype(bool))
        search = resp.search
    if not found:
        return np.zeros(0, bool), np.zeros(0, bool), search
    return np.concatenate(found), np.concatenate(correct), search


# ---------------------------------------------------------------------------------------------
# gensim's evaluations: file parsing and result shapes as in gensim 4.4


def evaluate_word_pairs(
    kv: Any, pairs: str, delimiter: str, encoding: str, restrict_vocab: int, case_insensitive: bool, dummy4unknown: bool
) -> tuple[Any, Any, float]:
    """gensim's ``evaluate_word_pairs`` with the similarities computed by the server in batches.

    Returns:
        (pearson, spearman, oov_ratio): scipy's result objects, as gensim returns them.

    Raises:
        ImportError: scipy (a gensim dependency) is not installed.
        ValueError: no pair with both words known (gensim's message).
    """
    from scipy import stats  # gensim's own dependency; the client installs without it

    lines = read_word_pairs(pairs, delimiter=delimiter, encoding=encoding, case_insensitive=case_insensitive)
    found, scores = (
        kv._run(word_pairs_plan(kv._table, kv._version, [(a, b) for a, b, _ in lines], restrict_vocab or 0, case_insensitive))
        if lines else (np.zeros(0, bool), np.zeros(0, np.float32))
    )
    similarity_gold, similarity_model, oov = [], [], 0
    for (_, _, sim), ok, score in zip(lines, found, scores):
        if not ok:
            oov += 1
            if dummy4unknown:
                similarity_model.append(0.0)
                similarity_gold.append(sim)
            continue
        similarity_gold.append(sim)
        similarity_model.append(score)
    if not similarity_gold:
        raise ValueError(
            f"No valid similarity judgements found in {pairs}: either invalid format or "
            f"all are out-of-vocabulary in {kv}"
        )
    spearman = stats.spearmanr(similarity_gold, similarity_model)
    pearson = stats.pearsonr(similarity_gold, similarity_model)
    if dummy4unknown:
        oov_ratio = float(oov) / len(similarity_gold) * 100
    else:
        oov_ratio = float(oov) / (len(similarity_gold) + oov) * 100
    logger.info("Pearson correlation coefficient against %s: %.4f", pairs, pearson[0])
    logger.info("Spearman rank-order correlation coefficient against %s: %.4f", pairs, spearman[0])
    logger.info("Pairs with unknown words ratio: %.1f%%", oov_ratio)
    return pearson, spearman, oov_ratio


def _score(section: dict[str, Any]) -> float:
    correct, incorrect = len(section["correct"]), len(section["incorrect"])
    if correct + incorrect == 0:
        return 0.0
    score = correct / (correct + incorrect)
    logger.info("%s: %.1f%% (%i/%i)", section["section"], 100.0 * score, correct, correct + incorrect)
    return score


def evaluate_word_analogies(
    kv: Any, analogies: str, restrict_vocab: int, case_insensitive: bool, dummy4unknown: bool, approximate: bool
) -> tuple[float, list[dict[str, Any]]]:
    """gensim's ``evaluate_word_analogies`` with every question answered by the server in batches.

    Returns:
        (score, sections): the overall accuracy and, per section and a final "Total accuracy" one,
        ``{"section": name, "correct": [(a, b, c, expected), ...], "incorrect": [...]}``.

    Raises:
        ValueError: a question line before the first section header (gensim's message).
    """
    parsed = read_analogies(analogies, case_insensitive)
    quads = [q for _, questions in parsed for q in questions]
    found, correct, search = kv._run(
        word_analogies_plan(kv._table, kv._version, quads, restrict_vocab or 0, case_insensitive, approximate)
    )
    logger.info("analogies answered on the server (%s search)", search)
    flags = iter(zip(found.tolist(), correct.tolist()))
    sections, oov = [], 0
    for name, questions in parsed:
        section: dict[str, Any] = {"section": name, "correct": [], "incorrect": []}
        for q, (ok, right) in zip(questions, flags):
            if not ok:
                oov += 1
                if dummy4unknown:
                    section["incorrect"].append(q)
                continue
            section["correct" if right else "incorrect"].append(q)
        sections.append(section)
        _score(section)
    total = {
        "section": "Total accuracy",
        "correct": list(itertools.chain.from_iterable(s["correct"] for s in sections)),
        "incorrect": list(itertools.chain.from_iterable(s["incorrect"] for s in sections)),
    }
    oov_ratio = float(oov) / len(quads) * 100
    logger.info("Quadruplets with out-of-vocabulary words: %.1f%%", oov_ratio)
    score = _score(total)
    sections.append(total)
    return score, sections
