"""Default limits every part knows: the server refuses beyond them, the client splits batches under them."""

from __future__ import annotations

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
MAX_CALL_CHARS = 4_000_000  # characters of all the texts of one Embed call
MAX_TEXT_TOKENS = 8_192  # tokens pooled per text; the most `truncate` may ask
DEFAULT_TRUNCATE = 512  # tokens pooled per text when a request does not say
