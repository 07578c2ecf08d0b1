"""Conventions the client and the server share on the wire: packed little-endian arrays and the
missing-key policies (names users pass <-> the proto enum), plus the one unit-normalisation.

The server imports these from here (it depends on the client distribution), so both sides can
never disagree on a dtype or a policy name.
"""

from __future__ import annotations

import numpy as np

from embserve_client.pb import embserve_pb2 as pb

# Default limits both sides know: the server refuses beyond them, the client splits batches under them.
MAX_MESSAGE_BYTES = 64 << 20  # gRPC send and receive (grpc's own default is 4 MiB)
MAX_KEYS_PER_CALL = 65_536  # keys or ids per Lookup
MAX_QUERIES_PER_CALL = 4_096  # queries per Search
# gensim's default vocabulary cut for evaluate_word_pairs / evaluate_word_analogies; on the wire,
# restrict_vocab 0 means it.
RESTRICT_VOCAB = 300_000
MAX_PAIRS_PER_CALL = 65_536  # word pairs per Similarity / EvaluateWordPairs, questions per EvaluateWordAnalogies
# Texts: Tokenize / Embed / /v1/embeddings (OpenAI accepts 2,048 inputs of up to 8,191 tokens).
MAX_TEXTS_PER_CALL = 2_048  # texts per call
MAX_TEXT_CHARS = 100_000  # characters of one text
MAX_CALL_CHARS = 4_000_000  # characters of all the texts of one call
MAX_TEXT_TOKENS = 8_192  # tokens pooled per text; the most `truncate` may ask
DEFAULT_TRUNCATE = 512  # tokens pooled per text when a request does not say

LE_F32 = np.dtype("<f4")  # vectors and scores: little-endian float32, C order
LE_I64 = np.dtype("<i8")  # row ids: little-endian int64, -1 for "none"

# Policy name (what users pass) -> proto enum value.
MISSING_POLICIES: dict[str, pb.MissingPolicy] = {
    "error": pb.MISSING_POLICY_ERROR,
    "skip": pb.MISSING_POLICY_SKIP,
    "zero": pb.MISSING_POLICY_ZERO,
    "subword": pb.MISSING_POLICY_SUBWORD,
}
# Proto enum value -> policy name; an unset policy means "error".
POLICY_NAMES: dict[int, str] = {pb.MISSING_POLICY_UNSPECIFIED: "error", **{v: k for k, v in MISSING_POLICIES.items()}}


def unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), same dtype; the ONE normalisation rule.

    Cosine tables are indexed on these rows, queries are built from them and maps are laid out
    on them, so a score computed anywhere is the same cosine.
    """
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
