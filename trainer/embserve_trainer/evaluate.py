"""Quality of a table: WordSim-353 / SimLex-999 Spearman rho and Google analogies, gensim-compatible.

Semantics follow gensim 4's ``KeyedVectors.evaluate_word_pairs`` and ``evaluate_word_analogies``
exactly (so figures compare with published gensim numbers):

- only the first ``restrict_vocab`` rows count (rows are in frequency order); with
  ``case_insensitive`` every key and test word is upper-cased and a key stands for its first (most
  frequent) case variant;
- pairs or questions with a word outside that vocabulary are skipped and reported as coverage;
- an analogy a:b :: c:? is answered by 3CosAdd: the rows nearest to unit(b^ + c^ - a^) among the
  restricted rows, the three question rows excluded, first of the top 5 whose upper-cased key is not
  a question word.

The difference is speed: all questions go to FAISS as one (n, d) batch instead of one
``most_similar`` call each, answered either exactly (``faiss.knn``, gensim's answers to the last
question) or by the bundle's own HNSW index restricted to the first ``restrict_vocab`` rows (what
``evaluate_bundle`` uses when the index ranks by cosine; ``exact=True`` forces brute force). The
report names the search that answered; bench/bench_evaluate.py measures both against gensim.

    report = evaluate_table(vectors, keys)            # dict, written as eval.json
    print(format_report(report))
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from embserve_format.bundle import INDEX, Bundle, list_versions, read_bundle, sha256_file
from embserve_format.gensim_files import read_analogies, read_word_pairs
from embserve_format.limits import RESTRICT_VOCAB
from embserve_index import VectorIndex, analogies, load_index, prepare_rows
from embserve_index.analogies import ANALOGY_EF_SEARCH
from scipy import stats

logger = logging.getLogger(__name__)

REPORT_FORMAT = "embserve-eval/1"
PAIR_SETS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}
ANALOGY_SET = "questions-words.txt"


@dataclass(frozen=True)
class AnalogySearch:
    """How analogy questions are answered: an index over unit rows, only rows below ``restrict``."""

    name: str  # recorded in the report, e.g. "exact" or "hnsw efSearch=256"
    index: VectorIndex
    restrict: int
    exact: bool = True
    ef_search: int = ANALOGY_EF_SEARCH

    def run(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(nq, k) nearest row ids of unit ``queries``, -1 for none."""
        return self.index.search(queries, k, exact=self.exact, ef_search=self.ef_search, restrict=self.restrict)[1]


def exact_search(rows: np.ndarray) -> AnalogySearch:
    """Brute-force inner product over ``rows`` (unit rows: cosine), one BLAS batch."""
    return AnalogySearch("exact", VectorIndex.brute_force(np.ascontiguousarray(rows, dtype=np.float32)), len(rows))


def index_search(index: VectorIndex, n_rows: int, ef_search: int = ANALOGY_EF_SEARCH) -> AnalogySearch:
    """Search an approximate ``index`` over unit rows (the server's search), only rows below
    ``n_rows`` (the ``restrict_vocab`` cut)."""
    return AnalogySearch(f"hnsw efSearch={ef_search}", index, n_rows, exact=False, ef_search=ef_search)


def bundle_index_search(bundle: Bundle, n_rows: int, ef_search: int = ANALOGY_EF_SEARCH) -> AnalogySearch | None:
    """The bundle's HNSW index as an analogy search, if it ranks exactly as cosine over the rows; else None."""
    meta, path = bundle.index_info, bundle.file(INDEX)
    if path is None or not (meta.get("normalized") and meta.get("faiss_metric") == "inner_product"):
        return None
    index = VectorIndex.from_index(load_index(path), raw=bundle.vectors, rerank=int(meta.get("rerank") or 1))
    if not isinstance(index.index, faiss.IndexHNSW) or index.ntotal != bundle.count:
        return None
    return index_search(index, n_rows, ef_search)


def gensim_test_data() -> Path:
    """``gensim/test/test_data`` inside the installed gensim wheel (found without importing gensim)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the evaluation sets ship with gensim, which is not installed: pip install gensim")
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"


vocab_index = analogies.vocabulary  # test word -> row over the first N keys (upper-cased: first row)


def evaluate_word_pairs(
    rows: np.ndarray, vocab: dict[str, int], path: Path, case_insensitive: bool = True
) -> dict[str, Any]:
    """Spearman/Pearson correlation of cosine similarity with human judgements (gensim's file format).

    Args:
        rows: (n, d) unit-normalised float32 rows.
        vocab: from :func:`vocab_index`.
        path: tab-separated ``word1 word2 score`` lines, ``#`` comments.

    Returns:
        ``spearman``, ``pearson``, ``pairs`` (valid lines), ``covered`` (both words known), ``coverage``,
        ``oov_ratio`` (percent, as gensim logs it).

    Raises:
        ValueError: no pair has both words in the vocabulary.
    """
    lines = read_word_pairs(path, case_insensitive=case_insensitive)
    gold, left, right = [], [], []
    for a, b, sim in lines:
        if a in vocab and b in vocab:
            gold.append(sim)
            left.append(vocab[a])
            right.append(vocab[b])
    total = len(lines)
    if not gold:
        raise ValueError(f"{path}: no pair has both words in the table's first {len(rows)} keys")
    model = np.einsum("ij,ij->i", rows[left], rows[right])  # cosine of unit rows, (pairs,)
    spearman = stats.spearmanr(gold, model)
    pearson = stats.pearsonr(gold, model)
    oov = total - len(gold)
    return {
        "spearman": float(spearman.statistic),
        "spearman_pvalue": float(spearman.pvalue),
        "pearson": float(pearson.statistic),
        "pairs": total,
        "covered": len(gold),
        "coverage": len(gold) / total,
        "oov_ratio": 100.0 * oov / total,
    }


def evaluate_word_analogies(
    rows: np.ndarray,
    keys: Sequence[str],
    vocab: dict[str, int],
    path: Path,
    case_insensitive: bool = True,
    search: AnalogySearch | None = None,
) -> dict[str, Any]:
    """3CosAdd analogy accuracy per section and in total, answered in one batched FAISS search.

    Args:
        rows: (n, d) unit-normalised float32 rows, already cut to ``restrict_vocab``.
        keys: the table's keys (row i = keys[i]).
        vocab: from :func:`vocab_index` over the same restriction.
        path: questions file (``: section`` headers, then ``a b c expected`` lines).
        search: how to find the nearest rows (default :func:`exact_search` over ``rows``).

    Returns:
        ``sections`` (name, correct, answered, questions, accuracy), ``total``, ``search`` and ``seconds``.
    """
    search = search or exact_search(rows)
    t0 = time.perf_counter()
    sections = read_analogies(path, case_insensitive)  # gensim's reading, shared with RemoteKeyedVectors
    quads, owner = [], []  # known questions as row ids (a, b, c, expected), and their section
    for s, (_, questions) in enumerate(sections):
        for q in questions:
            if all(w in vocab for w in q):
                quads.append([vocab[w] for w in q])
                owner.append(s)
    ids = np.array(quads, dtype=np.int64).reshape(-1, 4)  # (nq, 4)
    correct = analogies.answer(
        search.index, ids, keys, vocab, case_insensitive=case_insensitive, restrict=search.restrict, exact=search.exact, ef_search=search.ef_search
    )
    per_section = []
    owner_arr = np.array(owner, dtype=np.int64)
    for s, (name, questions) in enumerate(sections):
        mask = owner_arr == s
        n_ok, n_answered = int(correct[mask].sum()), int(mask.sum())
        per_section.append({
            "section": name, "correct": n_ok, "answered": n_answered, "questions": len(questions),
            "accuracy": n_ok / n_answered if n_answered else 0.0,
        })
    n_questions = sum(len(q) for _, q in sections)
    total = {
        "correct": int(correct.sum()), "answered": len(ids), "questions": n_questions,
        "accuracy": float(correct.mean()) if len(ids) else 0.0,
        "coverage": len(ids) / n_questions if n_questions else 0.0,
    }
    seconds = time.perf_counter() - t0
    logger.info("analogies: %d/%d correct (%.1f%%) in %.2f s", total["correct"], len(ids), 100 * total["accuracy"], seconds)
    return {"sections": per_section, "total": total, "search": search.name, "seconds": round(seconds, 3)}


def evaluate_table(
    vectors: np.ndarray,
    keys: Sequence[str],
    *,
    restrict_vocab: int = RESTRICT_VOCAB,
    case_insensitive: bool = True,
    data_dir: Path | None = None,
    analogies: bool = True,
    analogy_search: Callable[[np.ndarray], AnalogySearch] | None = None,
) -> dict[str, Any]:
    """Evaluate a table on WordSim-353, SimLex-999 and the Google analogies.

    Args:
        vectors: (count, dim) raw vectors, rows in frequency order.
        keys: row keys.
        restrict_vocab: only the first N rows take part (gensim's default 300,000).
        case_insensitive: compare upper-cased words (gensim's default).
        data_dir: directory with the test sets (default: gensim's ``test/test_data``).
        analogies: also run the analogy test.
        analogy_search: builds the analogy search from the restricted unit rows (default exact).

    Returns:
        The report (``eval.json`` content): settings, dataset checksums, ``word_pairs`` and ``analogies``.

    Raises:
        ValueError: ``restrict_vocab`` < 1, or missing test sets.
    """
    if restrict_vocab < 1:
        raise ValueError(f"restrict_vocab must be a positive integer, got {restrict_vocab!r}")
    data_dir = data_dir or gensim_test_data()
    files = {name: data_dir / fname for name, fname in PAIR_SETS.items()}
    if analogies:
        files["analogies"] = data_dir / ANALOGY_SET
    for p in files.values():
        if not p.is_file():
            raise ValueError(f"{p}: evaluation set missing; reinstall gensim or pass another data directory")
    n = min(restrict_vocab, len(keys))
    rows = prepare_rows(np.asarray(vectors[:n]), "cosine")  # (n, d) unit rows; zero rows stay zero
    vocab = vocab_index(keys, n, case_insensitive)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "restrict_vocab": restrict_vocab,
        "case_insensitive": case_insensitive,
        "count": len(keys),
        "vector_size": int(vectors.shape[1]),
        "datasets": {name: {"file": p.name, "sha256": sha256_file(p)} for name, p in files.items()},
        "word_pairs": {},
    }
    for name in PAIR_SETS:
        try:
            report["word_pairs"][name] = evaluate_word_pairs(rows, vocab, files[name], case_insensitive)
        except ValueError as exc:
            logger.warning("%s", exc)
            report["word_pairs"][name] = {"spearman": None, "pairs": None, "covered": 0, "coverage": 0.0, "error": str(exc)}
    if analogies:
        search = analogy_search(rows) if analogy_search else None
        report["analogies"] = evaluate_word_analogies(rows, keys, vocab, files["analogies"], case_insensitive, search)
    return report


def resolve_bundle(path: Path) -> Path:
    """A bundle directory as given, or the newest version of a table directory.

    Raises:
        ValueError: neither a bundle (``manifest.json``) nor a table directory with versions.
    """
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path
    if path.is_dir():
        versions = list_versions(path.parent, path.name) if path.name else []
        if versions:
            return path / str(versions[-1])
    raise ValueError(f"{path}: not a bundle (no manifest.json) nor a table directory with versions")


def evaluate_bundle(
    path: Path, *, exact: bool = False, ef_search: int = ANALOGY_EF_SEARCH, **kwargs: Any
) -> tuple[Bundle, dict[str, Any]]:
    """Read (and verify) a bundle or the newest version of a table, and evaluate it. Never writes to it.

    Analogies go through the bundle's HNSW index at ``ef_search`` when it ranks by cosine, unless
    ``exact``; keyword arguments go to :func:`evaluate_table`.
    """
    bundle = read_bundle(resolve_bundle(path))

    def analogy_search(rows: np.ndarray) -> AnalogySearch:
        indexed = None if exact else bundle_index_search(bundle, len(rows), ef_search)
        return indexed or exact_search(rows)

    report = evaluate_table(bundle.vectors, bundle.keys, analogy_search=analogy_search, **kwargs)
    report["table"] = {"name": bundle.name, "version": bundle.version, "path": str(bundle.path), "checksum": bundle.checksum}
    return bundle, report


def format_report(report: dict[str, Any]) -> str:
    """A readable plain-text table of a report."""
    lines = []
    table = report.get("table")
    head = f"{table['name']} v{table['version']}  " if table else ""
    lines.append(f"{head}{report['count']} x {report['vector_size']}, restrict_vocab={report['restrict_vocab']}, "
                 f"case_insensitive={report['case_insensitive']}")
    lines.append("")
    lines.append(f"{'word pairs':<28}{'spearman':>10}{'pearson':>10}{'coverage':>18}")
    for name, r in report["word_pairs"].items():
        if r.get("spearman") is None:
            lines.append(f"{name:<28}{'-':>10}{'-':>10}{'0 pairs':>18}")
            continue
        cov = f"{r['covered']}/{r['pairs']} ({100 * r['coverage']:.1f}%)"
        lines.append(f"{name:<28}{r['spearman']:>10.4f}{r['pearson']:>10.4f}{cov:>18}")
    if "analogies" in report:
        a = report["analogies"]
        lines.append("")
        lines.append(f"{'analogies (3CosAdd)':<28}{'accuracy':>10}{'correct':>10}{'answered/asked':>18}")
        for s in a["sections"] + [{**a["total"], "section": "TOTAL"}]:
            lines.append(f"{s['section']:<28}{100 * s['accuracy']:>9.1f}%{s['correct']:>10}"
                         f"{str(s['answered']) + '/' + str(s['questions']):>18}")
        lines.append(f"({a.get('search', 'exact')} search, {a['seconds']:.2f} s)")
    return "\n".join(lines)
