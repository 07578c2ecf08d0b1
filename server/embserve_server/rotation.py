"""Rotation without a restart: the TLS files and the token file are re-read when their content changes.

Every ``rotation_interval`` seconds one thread reads ``--tls-cert``, ``--tls-key``,
``--tls-client-ca`` and ``--auth-token-file`` (a few kilobytes) and compares a sha256 of their
content with the last one it saw. Content, not inode or mtime: a Kubernetes Secret volume is
updated by writing a new timestamped directory and renaming a ``..data`` symlink onto it, so the
path the server was given (``tls.crt -> ..data/tls.crt``) never changes and a watch on it, or on
its inode, can miss the swap; reading through the links always sees the file a new open would.

What a change does:

- TLS: :meth:`ServerTls.reload <embserve_server.tls.ServerTls.reload>` checks the new certificate,
  key and CA with OpenSSL and hands them to new connections on both ports; open connections and
  their calls keep the old ones. A broken set (unreadable, not PEM, a key that does not match the
  certificate) is refused and logged, and the old certificate keeps serving.
- Tokens: :meth:`TokenCheck.replace <embserve_server.auth.TokenCheck.replace>`: a removed token is
  refused on its next call. A malformed file keeps the old tokens, and the log says why.

Each new content is tried once: a refused file is logged and counted once, not at every poll, and
tried again when it changes. Outcomes are counted in
``embserve_credential_reloads_total{what="tls"|"tokens", result="ok"|"error"}``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embserve_server.auth import TokenCheck, parse_tokens
from embserve_server.tls import ServerTls, read_tls

logger = logging.getLogger(__name__)

WHAT = ("tls", "tokens")
RESULTS = ("ok", "error")


def file_digest(path: Path) -> tuple[bytes, str]:
    """(content, sha256 hex) of ``path``, following symlinks.

    Raises:
        ValueError: the file cannot be read, naming it.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return data, hashlib.sha256(data).hexdigest()


class Rotation:
    """Polls the TLS and token files and swaps what serves when their content changes.

    Args:
        tls: the serving certificate of both ports (None: TLS off).
        tokens: the token check of both ports (None: auth off).
        token_file: the file ``tokens`` came from.
        reloads: the ``embserve_credential_reloads_total`` counter (labels what, result), or None.
    """

    def __init__(self, *, tls: ServerTls | None = None, tokens: TokenCheck | None = None,
                 token_file: Path | None = None, reloads: Any = None) -> None:
        if (tokens is None) != (token_file is None):
            raise ValueError("Rotation: tokens and token_file go together")
        self.tls, self.tokens, self.token_file, self.reloads = tls, tokens, token_file, reloads
        self._seen: dict[str, str | None] = {
            "tls": tls.files.digest if tls is not None else None,
            "tokens": tokens.source if tokens is not None else None,
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def watching(self) -> bool:
        return self.tls is not None or self.tokens is not None

    def poll(self) -> None:
        """Check each file once; swap, or refuse and log, what changed since the last poll."""
        tls, tokens, token_file = self.tls, self.tokens, self.token_file
        if tls is not None:

            def read_certificates() -> tuple[Any, str]:
                files = read_tls(tls.config)
                assert files is not None  # TLS stays on for the life of the server
                return files, files.digest

            self._check("tls", read_certificates, tls.reload, str(tls.config.tls_cert))
        if tokens is not None and token_file is not None:

            def apply_tokens(data: bytes) -> None:
                tokens.replace(parse_tokens(data, token_file), source=hashlib.sha256(data).hexdigest())

            self._check("tokens", lambda: file_digest(token_file), apply_tokens, str(token_file))

    def _check(self, what: str, read: Callable[[], tuple[Any, str]], apply: Callable[[Any], None], name: str) -> None:
        error: ValueError | None = None
        try:
            content, digest = read()
        except ValueError as exc:
            content, digest, error = None, f"unreadable: {exc}", exc
        if digest == self._seen[what]:
            return
        self._seen[what] = digest  # tried once: a refused file is not logged again until it changes
        try:
            if error is not None:
                raise error
            apply(content)
        except ValueError as exc:
            self._count(what, "error")
            logger.error("%s reload refused, the previous %s keep serving: %s", what, "certificate and key" if what == "tls" else "tokens", exc)
            return
        self._count(what, "ok")
        logger.info("%s reloaded from %s: %s", what, name,
                    "new connections get the new certificate" if what == "tls" else "the next calls are checked against the new tokens")

    def _count(self, what: str, result: str) -> None:
        if self.reloads is not None:
            self.reloads.labels(what, result).inc()

    def start(self, interval: float) -> None:
        """Poll every ``interval`` seconds in a daemon thread (nothing to do when 0 or nothing is watched).

        Raises:
            ValueError: a negative interval.
        """
        if interval < 0:
            raise ValueError(f"--rotation-interval: {interval} must be >= 0 seconds (0 = read the files once)")
        if interval == 0 or not self.watching or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, args=(interval,), name="embserve-rotation", daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a bug here must not end rotation for the life of the server
                logger.exception("credential rotation poll failed")

    def stop(self) -> None:
        """End the polling thread (waits for a poll in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
