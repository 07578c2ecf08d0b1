"""TLS for both ports from one certificate and key, replaced without a restart, and the rule on
where plaintext HTTP may listen.

``--tls-cert/--tls-key`` turn TLS on for gRPC and for the HTTP side port (``/metrics`` and the
explorer answer only ``https://``); ``--tls-client-ca`` requires client certificates signed by that
CA on both. :class:`ServerTls` holds the material now serving: :meth:`ServerTls.reload` (called by
rotation.py when the files' content changes) checks a new certificate, key and CA with OpenSSL
before anything uses them, then hands them to new connections of both ports; connections already
open, and the calls on them, keep the old certificate. A broken new set raises ``ValueError`` and
the old one keeps serving.

- gRPC: ``grpc.dynamic_ssl_server_credentials``, whose fetcher grpc calls before every new
  connection's handshake; it returns the new configuration once, then None ("no change").
- HTTP: one base ``ssl.SSLContext`` whose ``sni_callback`` (run for every ClientHello, with or
  without SNI) moves the connection onto the newest context.

:func:`check_http_exposure` refuses a start-up that would send bearer tokens over plaintext HTTP
beyond this machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from embserve_server.config import ServerConfig


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()  # follows symlinks: a Kubernetes Secret's ..data swap included
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot read ({exc.strerror or exc})") from exc


def _pair(config: ServerConfig) -> tuple[Path, Path] | None:
    """(cert, key), or None when TLS is off; half a configuration is an error."""
    cert, key = config.tls_cert, config.tls_key
    if cert is None and key is None:
        if config.tls_client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    return cert, key


@dataclass(frozen=True)
class TlsFiles:
    """The bytes of ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca`` (None: no client CA) as read once."""

    cert: bytes
    key: bytes
    client_ca: bytes | None

    @property
    def digest(self) -> str:
        """sha256 over all three: what the rotation compares between polls."""
        h = hashlib.sha256()
        for part in (self.cert, self.key, self.client_ca or b""):
            h.update(len(part).to_bytes(8, "little") + part)
        return h.hexdigest()


def read_tls(config: ServerConfig) -> TlsFiles | None:
    """Read the configured TLS files (None when TLS is off).

    Raises:
        ValueError: half a configuration or an unreadable file.
    """
    pair = _pair(config)
    if pair is None:
        return None
    cert, key = pair
    ca = config.tls_client_ca
    return TlsFiles(_read(cert, "--tls-cert"), _read(key, "--tls-key"), _read(ca, "--tls-client-ca") if ca is not None else None)


@contextlib.contextmanager
def _as_file(data: bytes) -> Iterator[str]:
    """A path holding ``data`` for OpenSSL's file-only loader: an anonymous memory file where the
    system has one (the key never touches a disk), else a file in a private temporary directory."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("embserve-tls", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="embserve-tls-") as d:
        path = Path(d) / "part.pem"
        path.write_bytes(data)
        yield str(path)


def ssl_context(files: TlsFiles, config: ServerConfig) -> ssl.SSLContext:
    """A TLS 1.2+ server context for ``files``: OpenSSL checks the chain, the key and that they match.

    Raises:
        ValueError: the certificate, the key or the client CA is not usable, naming the files.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        with _as_file(files.cert) as cert, _as_file(files.key) as key:
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(
            f"--tls-cert {config.tls_cert} / --tls-key {config.tls_key}: not a usable certificate and matching key "
            f"({getattr(exc, 'reason', None) or exc}); expected a PEM certificate chain and the PEM private key it was issued for"
        ) from exc
    if files.client_ca is not None:
        try:
            context.load_verify_locations(cadata=files.client_ca.decode("ascii"))
        except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"--tls-client-ca {config.tls_client_ca}: not a usable CA ({getattr(exc, 'reason', None) or exc}); "
                "expected one or more PEM certificates"
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _grpc_configuration(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(files.key, files.cert)], root_certificates=files.client_ca)


class ServerTls:
    """The certificate, key and client CA serving both ports now, and their replacement.

    Args:
        config: names the files (for messages and re-reads).
        files: the first material, from :func:`read_tls`.

    Raises:
        ValueError: ``files`` are not a usable certificate, key and CA.
    """

    def __init__(self, config: ServerConfig, files: TlsFiles) -> None:
        self.config = config
        self.files = files
        self.context = ssl_context(files, config)  # the newest context: new HTTPS connections get it
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None  # not yet handed to grpc

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """gRPC credentials that ask :meth:`_fetch` for a newer certificate before each new connection."""
        return grpc.dynamic_ssl_server_credentials(
            _grpc_configuration(self.files), self._fetch, require_client_authentication=self.files.client_ca is not None
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Runs on grpc's threads before every new connection's handshake: cheap when nothing changed.
        if self._pending is None:
            return None
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def http_context(self) -> ssl.SSLContext:
        """The HTTP port's context: it serves the newest certificate to every new connection."""
        base = ssl_context(self.files, self.config)

        def newest(connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, context: ssl.SSLContext) -> None:
            current = self.context
            if current is not context:
                connection.context = current
            return None

        base.sni_callback = newest
        return base

    def reload(self, files: TlsFiles) -> None:
        """Serve ``files`` to new connections on both ports (open connections keep the old ones).

        Raises:
            ValueError: not a usable certificate, key and CA; the old ones keep serving.
        """
        context = ssl_context(files, self.config)
        configuration = _grpc_configuration(files)
        with self._lock:
            self.files, self.context, self._pending = files, context, configuration


def server_tls(config: ServerConfig) -> ServerTls | None:
    """The :class:`ServerTls` of ``--tls-cert/--tls-key/--tls-client-ca`` (None when TLS is off).

    Raises:
        ValueError: half a configuration, unreadable files, or a key that does not match the certificate.
    """
    files = read_tls(config)
    return None if files is None else ServerTls(config, files)


def add_port(server: grpc.Server, config: ServerConfig, tls: ServerTls | None) -> int:
    """Bind ``config.address`` with ``tls`` (rotating credentials), else plaintext; returns the port (0 = failed)."""
    if tls is None:
        return server.add_insecure_port(config.address)
    return server.add_secure_port(config.address, tls.grpc_credentials())


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ::1."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_http_exposure(config: ServerConfig) -> None:
    """Refuse to send bearer tokens over plaintext HTTP beyond loopback.

    When the HTTP port asks for tokens (the explorer with ``--auth-token-file``, or
    ``--metrics-auth``) and TLS is off, its address must be loopback unless
    ``--allow-insecure-http`` says the network in between is trusted (e.g. a TLS-terminating proxy).

    Raises:
        ValueError: the refusal, naming the address and the ways out.
    """
    if not config.metrics_address or config.tls_cert is not None or config.allow_insecure_http:
        return
    asks_tokens = config.auth_token_file is not None and (config.explorer or config.metrics_auth)
    if not asks_tokens:
        return
    host = config.metrics_address.rpartition(":")[0]
    if not is_loopback(host):
        raise ValueError(
            f"--metrics-address {config.metrics_address}: the HTTP port asks for bearer tokens and would receive them "
            "in clear text; serve it over TLS (--tls-cert/--tls-key), bind it to loopback (127.0.0.1), "
            "or pass --allow-insecure-http if a TLS proxy in front of it protects the network"
        )
