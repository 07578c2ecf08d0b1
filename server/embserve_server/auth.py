"""Bearer tokens: the one token check both ports use (gRPC metadata and HTTP ``Authorization``).

A token file holds one ``TOKEN ROLE`` per line, ROLE ``read`` (queries, reflection, the explorer,
``/metrics`` when it is protected) or ``admin`` (also AdminService; admin implies read). Tokens
are kept as sha256 digests and compared in constant time. Refusals raise
:class:`~embserve_server.errors.AuthError` (UNAUTHENTICATED / PERMISSION_DENIED, HTTP 401 / 403,
through the one map in errors.py) and are counted in
``embserve_rejected_requests_total{reason="unauthenticated"|"permission_denied"}``, whichever
port refused.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

from embserve_server.errors import AuthError

ROLES = ("read", "admin")  # admin implies read
HINT = "send 'authorization: Bearer <token>'"


def load_tokens(path: str | Path) -> dict[bytes, str]:
    """Read a token file: one ``TOKEN ROLE`` per line, ROLE ``read`` or ``admin``; ``#`` comments.

    Returns:
        sha256(token) -> role (tokens are kept hashed and compared in constant time).

    Raises:
        ValueError: unreadable file, a malformed line, an unknown role, a duplicate token, no token.
    """
    return parse_tokens(_read_token_file(path), path)


def _read_token_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"auth token file {path}: cannot read ({exc})") from exc


def parse_tokens(data: bytes, path: str | Path) -> dict[bytes, str]:
    """The tokens of a token file's bytes (``path`` names it in messages); see :func:`load_tokens`.

    Raises:
        ValueError: not UTF-8, a malformed line, an unknown role, a duplicate token, no token.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"auth token file {path}: cannot read ({exc})") from exc
    tokens: dict[bytes, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ROLES:
            raise ValueError(f"auth token file {path}, line {lineno}: expected 'TOKEN ROLE' with ROLE one of {ROLES}")
        digest = hashlib.sha256(parts[0].encode("utf-8")).digest()
        if digest in tokens:
            raise ValueError(f"auth token file {path}, line {lineno}: duplicate token")
        tokens[digest] = parts[1]
    if not tokens:
        raise ValueError(f"auth token file {path}: holds no token (auth on would refuse every call)")
    return tokens


def bearer_token(value: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authorization(metadata: Any) -> str | bytes | None:
    """The first ``authorization`` value of gRPC invocation metadata, or None."""
    for key, value in metadata or ():
        if key == "authorization":
            return value  # type: ignore[no-any-return]
    return None


class TokenCheck:
    """Who may call: the role of a bearer token, refusals raised as :class:`AuthError` and counted.

    Args:
        tokens: from :func:`load_tokens`; :meth:`replace` swaps them (rotation.py, on a file change).
        rejected: the ``embserve_rejected_requests_total`` counter (labelled by reason), or None.
        source: sha256 hex of the file content ``tokens`` came from (what rotation compares).
    """

    def __init__(self, tokens: dict[bytes, str], rejected: Any = None, *, source: str | None = None) -> None:
        self.tokens = tokens
        self.rejected = rejected
        self.source = source  # sha256 hex of the file content the tokens came from

    def replace(self, tokens: dict[bytes, str], *, source: str | None = None) -> None:
        """Check the next calls against ``tokens`` (one assignment: a call sees the old set or the new)."""
        self.tokens, self.source = tokens, source

    def _refuse(self, reason: str, message: str, *, denied: bool = False) -> AuthError:
        if self.rejected is not None:
            self.rejected.labels(reason).inc()
        return AuthError(message, denied=denied)

    def role_of(self, token: str) -> str | None:
        """The role of ``token``, None when it is not one of ours (constant time in which token)."""
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        role = None
        for known, known_role in self.tokens.items():  # no early exit: the time does not depend on which token
            if hmac.compare_digest(known, digest):
                role = known_role
        return role

    def authenticate(self, header: str | bytes | None) -> str:
        """The role of the token in an ``Authorization`` header value.

        Raises:
            AuthError: no bearer token, or one that is not in the token file (counted).
        """
        token = bearer_token(header)
        role = self.role_of(token) if token is not None else None
        if role is None:
            what = "no bearer token" if token is None else "invalid bearer token"
            raise self._refuse("unauthenticated", f"{what}: {HINT}")
        return role

    def require_admin(self, role: str, what: str) -> None:
        """Raise :class:`AuthError` (denied, counted) unless ``role`` is admin; ``what`` names the call."""
        if role != "admin":
            raise self._refuse("permission_denied", f"{what} needs an admin token; this token is {role!r}", denied=True)


def token_check(path: Path | None, rejected: Any = None) -> TokenCheck | None:
    """The :class:`TokenCheck` for ``--auth-token-file`` (None when auth is off).

    Raises:
        ValueError: an unreadable or malformed token file.
    """
    if path is None:
        return None
    data = _read_token_file(path)
    return TokenCheck(parse_tokens(data, path), rejected, source=hashlib.sha256(data).hexdigest())
