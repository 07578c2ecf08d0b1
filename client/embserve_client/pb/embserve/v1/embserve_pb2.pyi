from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MissingPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MISSING_POLICY_UNSPECIFIED: _ClassVar[MissingPolicy]
    MISSING_POLICY_ERROR: _ClassVar[MissingPolicy]
    MISSING_POLICY_SKIP: _ClassVar[MissingPolicy]
    MISSING_POLICY_ZERO: _ClassVar[MissingPolicy]
    MISSING_POLICY_SUBWORD: _ClassVar[MissingPolicy]
MISSING_POLICY_UNSPECIFIED: MissingPolicy
MISSING_POLICY_ERROR: MissingPolicy
MISSING_POLICY_SKIP: MissingPolicy
MISSING_POLICY_ZERO: MissingPolicy
MISSING_POLICY_SUBWORD: MissingPolicy

class TableInfo(_message.Message):
    __slots__ = ("name", "version", "vector_size", "count", "metric", "index", "checksum", "created_at", "ef_search", "nprobe", "has_counts", "has_subwords", "has_tokenizer", "source", "memory")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_SIZE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    HAS_COUNTS_FIELD_NUMBER: _ClassVar[int]
    HAS_SUBWORDS_FIELD_NUMBER: _ClassVar[int]
    HAS_TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    vector_size: int
    count: int
    metric: str
    index: str
    checksum: str
    created_at: str
    ef_search: int
    nprobe: int
    has_counts: bool
    has_subwords: bool
    has_tokenizer: bool
    source: str
    memory: TableMemory
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., vector_size: _Optional[int] = ..., count: _Optional[int] = ..., metric: _Optional[str] = ..., index: _Optional[str] = ..., checksum: _Optional[str] = ..., created_at: _Optional[str] = ..., ef_search: _Optional[int] = ..., nprobe: _Optional[int] = ..., has_counts: _Optional[bool] = ..., has_subwords: _Optional[bool] = ..., has_tokenizer: _Optional[bool] = ..., source: _Optional[str] = ..., memory: _Optional[_Union[TableMemory, _Mapping]] = ...) -> None: ...

class TableMemory(_message.Message):
    __slots__ = ("rows", "index", "keys", "extras")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    index: int
    keys: int
    extras: int
    def __init__(self, rows: _Optional[int] = ..., index: _Optional[int] = ..., keys: _Optional[int] = ..., extras: _Optional[int] = ...) -> None: ...

class ListTablesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTablesResponse(_message.Message):
    __slots__ = ("tables", "default_table")
    TABLES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TABLE_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[TableInfo]
    default_table: str
    def __init__(self, tables: _Optional[_Iterable[_Union[TableInfo, _Mapping]]] = ..., default_table: _Optional[str] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("table", "keys", "packed_keys", "ids", "missing", "normalize", "version")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PACKED_KEYS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    table: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    packed_keys: bytes
    ids: _containers.RepeatedScalarFieldContainer[int]
    missing: MissingPolicy
    normalize: bool
    version: int
    def __init__(self, table: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., packed_keys: _Optional[bytes] = ..., ids: _Optional[_Iterable[int]] = ..., missing: _Optional[_Union[MissingPolicy, str]] = ..., normalize: _Optional[bool] = ..., version: _Optional[int] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("table", "version", "vector_size", "rows", "vectors", "found", "ids")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    vector_size: int
    rows: int
    vectors: bytes
    found: bytes
    ids: bytes
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., vector_size: _Optional[int] = ..., rows: _Optional[int] = ..., vectors: _Optional[bytes] = ..., found: _Optional[bytes] = ..., ids: _Optional[bytes] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("positive", "negative", "positive_ids", "negative_ids", "positive_weights", "negative_weights", "vector")
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_IDS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_IDS_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    positive: _containers.RepeatedScalarFieldContainer[str]
    negative: _containers.RepeatedScalarFieldContainer[str]
    positive_ids: _containers.RepeatedScalarFieldContainer[int]
    negative_ids: _containers.RepeatedScalarFieldContainer[int]
    positive_weights: _containers.RepeatedScalarFieldContainer[float]
    negative_weights: _containers.RepeatedScalarFieldContainer[float]
    vector: bytes
    def __init__(self, positive: _Optional[_Iterable[str]] = ..., negative: _Optional[_Iterable[str]] = ..., positive_ids: _Optional[_Iterable[int]] = ..., negative_ids: _Optional[_Iterable[int]] = ..., positive_weights: _Optional[_Iterable[float]] = ..., negative_weights: _Optional[_Iterable[float]] = ..., vector: _Optional[bytes] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("table", "queries", "topn", "include_query_keys", "exact", "ef_search", "nprobe", "restrict_vocab", "min_score", "skip_special_tokens", "skip_subword_tokens", "version")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    TOPN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_QUERY_KEYS_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_VOCAB_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    SKIP_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SKIP_SUBWORD_TOKENS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    table: str
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    topn: int
    include_query_keys: bool
    exact: bool
    ef_search: int
    nprobe: int
    restrict_vocab: int
    min_score: float
    skip_special_tokens: bool
    skip_subword_tokens: bool
    version: int
    def __init__(self, table: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., topn: _Optional[int] = ..., include_query_keys: _Optional[bool] = ..., exact: _Optional[bool] = ..., ef_search: _Optional[int] = ..., nprobe: _Optional[int] = ..., restrict_vocab: _Optional[int] = ..., min_score: _Optional[float] = ..., skip_special_tokens: _Optional[bool] = ..., skip_subword_tokens: _Optional[bool] = ..., version: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("table", "version", "topn", "queries", "ids", "scores", "keys")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOPN_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    topn: int
    queries: int
    ids: bytes
    scores: bytes
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., topn: _Optional[int] = ..., queries: _Optional[int] = ..., ids: _Optional[bytes] = ..., scores: _Optional[bytes] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class SimilarityRequest(_message.Message):
    __slots__ = ("table", "a", "b", "version")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    table: str
    a: _containers.RepeatedScalarFieldContainer[str]
    b: _containers.RepeatedScalarFieldContainer[str]
    version: int
    def __init__(self, table: _Optional[str] = ..., a: _Optional[_Iterable[str]] = ..., b: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ...) -> None: ...

class SimilarityResponse(_message.Message):
    __slots__ = ("table", "version", "scores")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    scores: bytes
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., scores: _Optional[bytes] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("table", "texts", "add_special_tokens", "version")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    ADD_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    table: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    add_special_tokens: bool
    version: int
    def __init__(self, table: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., add_special_tokens: _Optional[bool] = ..., version: _Optional[int] = ...) -> None: ...

class TokenizedText(_message.Message):
    __slots__ = ("ids", "tokens")
    IDS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("table", "version", "texts")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    texts: _containers.RepeatedCompositeFieldContainer[TokenizedText]
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., texts: _Optional[_Iterable[_Union[TokenizedText, _Mapping]]] = ...) -> None: ...

class LookupTextRequest(_message.Message):
    __slots__ = ("table", "text", "add_special_tokens", "mean", "version")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ADD_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    table: str
    text: str
    add_special_tokens: bool
    mean: bool
    version: int
    def __init__(self, table: _Optional[str] = ..., text: _Optional[str] = ..., add_special_tokens: _Optional[bool] = ..., mean: _Optional[bool] = ..., version: _Optional[int] = ...) -> None: ...

class LookupTextResponse(_message.Message):
    __slots__ = ("table", "version", "vector_size", "ids", "tokens", "vectors", "mean")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_SIZE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    vector_size: int
    ids: _containers.RepeatedScalarFieldContainer[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    vectors: bytes
    mean: bytes
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., vector_size: _Optional[int] = ..., ids: _Optional[_Iterable[int]] = ..., tokens: _Optional[_Iterable[str]] = ..., vectors: _Optional[bytes] = ..., mean: _Optional[bytes] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: str
    def __init__(self, table: _Optional[str] = ...) -> None: ...

class ReloadOutcome(_message.Message):
    __slots__ = ("table", "outcome", "version", "message")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    table: str
    outcome: str
    version: int
    message: str
    def __init__(self, table: _Optional[str] = ..., outcome: _Optional[str] = ..., version: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("outcomes", "tables")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[ReloadOutcome]
    tables: _containers.RepeatedCompositeFieldContainer[TableInfo]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[ReloadOutcome, _Mapping]]] = ..., tables: _Optional[_Iterable[_Union[TableInfo, _Mapping]]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("table", "offset", "limit", "version")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    table: str
    offset: int
    limit: int
    version: int
    def __init__(self, table: _Optional[str] = ..., offset: _Optional[int] = ..., limit: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("table", "version", "count", "keys")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    count: int
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., count: _Optional[int] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class MostSimilarCosmulRequest(_message.Message):
    __slots__ = ("table", "version", "positive", "negative", "positive_vectors", "negative_vectors", "topn")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    TOPN_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    positive: _containers.RepeatedScalarFieldContainer[str]
    negative: _containers.RepeatedScalarFieldContainer[str]
    positive_vectors: bytes
    negative_vectors: bytes
    topn: int
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., positive: _Optional[_Iterable[str]] = ..., negative: _Optional[_Iterable[str]] = ..., positive_vectors: _Optional[bytes] = ..., negative_vectors: _Optional[bytes] = ..., topn: _Optional[int] = ...) -> None: ...

class MostSimilarCosmulResponse(_message.Message):
    __slots__ = ("table", "version", "ids", "scores", "keys")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    ids: bytes
    scores: bytes
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., ids: _Optional[bytes] = ..., scores: _Optional[bytes] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class RankByCentralityRequest(_message.Message):
    __slots__ = ("table", "version", "keys", "raw")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    keys: _containers.RepeatedScalarFieldContainer[str]
    raw: bool
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., keys: _Optional[_Iterable[str]] = ..., raw: _Optional[bool] = ...) -> None: ...

class RankByCentralityResponse(_message.Message):
    __slots__ = ("table", "version", "found", "scores")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    found: bytes
    scores: bytes
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., found: _Optional[bytes] = ..., scores: _Optional[bytes] = ...) -> None: ...

class CloserThanRequest(_message.Message):
    __slots__ = ("table", "version", "key1", "key2", "count_only")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY1_FIELD_NUMBER: _ClassVar[int]
    KEY2_FIELD_NUMBER: _ClassVar[int]
    COUNT_ONLY_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    key1: str
    key2: str
    count_only: bool
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., key1: _Optional[str] = ..., key2: _Optional[str] = ..., count_only: _Optional[bool] = ...) -> None: ...

class CloserThanResponse(_message.Message):
    __slots__ = ("table", "version", "count", "ids", "keys")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    count: int
    ids: bytes
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., count: _Optional[int] = ..., ids: _Optional[bytes] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class EvaluateWordPairsRequest(_message.Message):
    __slots__ = ("table", "version", "a", "b", "restrict_vocab", "case_insensitive")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_VOCAB_FIELD_NUMBER: _ClassVar[int]
    CASE_INSENSITIVE_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    a: _containers.RepeatedScalarFieldContainer[str]
    b: _containers.RepeatedScalarFieldContainer[str]
    restrict_vocab: int
    case_insensitive: bool
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., a: _Optional[_Iterable[str]] = ..., b: _Optional[_Iterable[str]] = ..., restrict_vocab: _Optional[int] = ..., case_insensitive: _Optional[bool] = ...) -> None: ...

class EvaluateWordPairsResponse(_message.Message):
    __slots__ = ("table", "version", "found", "scores")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    found: bytes
    scores: bytes
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., found: _Optional[bytes] = ..., scores: _Optional[bytes] = ...) -> None: ...

class EvaluateWordAnalogiesRequest(_message.Message):
    __slots__ = ("table", "version", "a", "b", "c", "expected", "restrict_vocab", "case_insensitive", "approximate", "ef_search")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    C_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_VOCAB_FIELD_NUMBER: _ClassVar[int]
    CASE_INSENSITIVE_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    a: _containers.RepeatedScalarFieldContainer[str]
    b: _containers.RepeatedScalarFieldContainer[str]
    c: _containers.RepeatedScalarFieldContainer[str]
    expected: _containers.RepeatedScalarFieldContainer[str]
    restrict_vocab: int
    case_insensitive: bool
    approximate: bool
    ef_search: int
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., a: _Optional[_Iterable[str]] = ..., b: _Optional[_Iterable[str]] = ..., c: _Optional[_Iterable[str]] = ..., expected: _Optional[_Iterable[str]] = ..., restrict_vocab: _Optional[int] = ..., case_insensitive: _Optional[bool] = ..., approximate: _Optional[bool] = ..., ef_search: _Optional[int] = ...) -> None: ...

class EvaluateWordAnalogiesResponse(_message.Message):
    __slots__ = ("table", "version", "found", "correct", "search")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    found: bytes
    correct: bytes
    search: str
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., found: _Optional[bytes] = ..., correct: _Optional[bytes] = ..., search: _Optional[str] = ...) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("table", "version", "texts", "token_ids", "normalize", "truncate", "dimensions")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    texts: _containers.RepeatedScalarFieldContainer[str]
    token_ids: _containers.RepeatedCompositeFieldContainer[TokenIds]
    normalize: bool
    truncate: int
    dimensions: int
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., texts: _Optional[_Iterable[str]] = ..., token_ids: _Optional[_Iterable[_Union[TokenIds, _Mapping]]] = ..., normalize: _Optional[bool] = ..., truncate: _Optional[int] = ..., dimensions: _Optional[int] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("table", "version", "vector_size", "vectors", "tokens", "unknown", "truncated")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_SIZE_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    table: str
    version: int
    vector_size: int
    vectors: bytes
    tokens: _containers.RepeatedScalarFieldContainer[int]
    unknown: _containers.RepeatedScalarFieldContainer[int]
    truncated: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, table: _Optional[str] = ..., version: _Optional[int] = ..., vector_size: _Optional[int] = ..., vectors: _Optional[bytes] = ..., tokens: _Optional[_Iterable[int]] = ..., unknown: _Optional[_Iterable[int]] = ..., truncated: _Optional[_Iterable[int]] = ...) -> None: ...
