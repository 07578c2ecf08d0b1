"""embserve client: embedding lookups and nearest neighbours from an embserve server.

    >>> from embserve_client import Client
    >>> with Client("localhost:50051") as c:
    ...     c.most_similar("cat", topn=3)

Everything public is listed in ``__all__``; other modules are private.
"""

from embserve_client.aio import AsyncClient
from embserve_client.client import Client
from embserve_client.core import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TARGET, DEFAULT_TIMEOUT
from embserve_client.errors import (
    AuthenticationError,
    ClientClosedError,
    DataLossError,
    DeadlineExceededError,
    EmbserveError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ServerError,
    UnavailableError,
    UnknownKeyError,
    UnknownTableError,
)
from embserve_client.keyedvectors import ReadOnlyTableError, RemoteKeyedVectors
from embserve_client.results import LookupResult, Neighbor, Refusal, SearchResult, TableInfo, Tokenized

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "AuthenticationError",
    "Client",
    "ClientClosedError",
    "DataLossError",
    "DeadlineExceededError",
    "EmbserveError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "LookupResult",
    "Neighbor",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "ReadOnlyTableError",
    "Refusal",
    "RemoteKeyedVectors",
    "SearchResult",
    "ServerError",
    "TableInfo",
    "Tokenized",
    "UnavailableError",
    "UnknownKeyError",
    "UnknownTableError",
    "__version__",
]
