"""Tokenizer tables (a language model's input embedding layer): the bundle's tokenizer.json,
loaded with the Hugging Face ``tokenizers`` library, plus masks of special and continuation tokens.

Registered as the ``tokenizer`` extra of :mod:`embserve_server.tables`; a table without
``tokenizer.json`` simply has no such extra and tokenizer calls answer FAILED_PRECONDITION.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from embserve_client import bundle as bfmt

from embserve_server.tables import EXTRA_LOADERS

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
EXTRA = "tokenizer"


@dataclass(frozen=True)
class TokenizerTable:
    tokenizer: Any  # tokenizers.Tokenizer
    special: np.ndarray  # (count,) bool: special tokens ([CLS], [PAD], ...)
    continuation: np.ndarray  # (count,) bool: sub-word continuation tokens ("##ing")
    continuation_prefix: str


def load(b: bfmt.Bundle) -> TokenizerTable | None:
    path = b.file(TOKENIZER_FILE)
    if path is None:
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise bfmt.BundleError(f"{path}: serving a tokenizer table needs: pip install tokenizers") from exc
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type for malformed files
        raise bfmt.BundleError(f"{path}: not a valid tokenizer.json ({exc})") from exc
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab_size > b.count:
        raise bfmt.BundleError(f"{path}: tokenizer has {vocab_size} tokens, table has only {b.count} rows")
    info = b.extras.get("tokenizer") or {}
    special = np.zeros(b.count, dtype=bool)
    special[np.asarray(info.get("special_ids") or [], dtype=np.int64)] = True
    prefix = str(info.get("continuation_prefix") or "##")
    continuation = np.fromiter((k.startswith(prefix) for k in b.keys), dtype=bool, count=b.count)
    return TokenizerTable(tokenizer, special, continuation, prefix)


EXTRA_LOADERS[EXTRA] = load
