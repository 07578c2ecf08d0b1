"""TLS for both ports from one certificate and key, and the rule on where plaintext HTTP may listen.

``--tls-cert/--tls-key`` turn TLS on for gRPC (:func:`add_port`) and for the HTTP side port
(:func:`http_ssl_context`: ``/metrics`` and the explorer answer only ``https://``);
``--tls-client-ca`` requires client certificates signed by that CA on both.
:func:`check_http_exposure` refuses a start-up that would send bearer tokens over plaintext HTTP
beyond this machine.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import grpc

from embserve_server.config import ServerConfig


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
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


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """gRPC TLS credentials from ``--tls-cert/--tls-key`` (and ``--tls-client-ca`` for mutual TLS).

    Returns None when TLS is off.

    Raises:
        ValueError: half a configuration or unreadable files.
    """
    pair = _pair(config)
    if pair is None:
        return None
    cert, key = pair
    client_ca = config.tls_client_ca
    return grpc.ssl_server_credentials(
        [(_read(key, "--tls-key"), _read(cert, "--tls-cert"))],
        root_certificates=_read(client_ca, "--tls-client-ca") if client_ca is not None else None,
        require_client_auth=client_ca is not None,
    )


def add_port(server: grpc.Server, config: ServerConfig) -> int:
    """Bind ``config.address`` with TLS when configured, else plaintext; returns the port (0 = failed)."""
    credentials = server_credentials(config)
    if credentials is None:
        return server.add_insecure_port(config.address)
    return server.add_secure_port(config.address, credentials)


def http_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The HTTP port's TLS context: the gRPC certificate and key (and client CA), TLS 1.2 or later.

    Returns None when TLS is off.

    Raises:
        ValueError: half a configuration, unreadable files, or a key that does not match the certificate.
    """
    pair = _pair(config)
    if pair is None:
        return None
    cert, key = pair
    _read(cert, "--tls-cert")  # the same messages as gRPC's for missing files
    _read(key, "--tls-key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        if config.tls_client_ca is not None:
            _read(config.tls_client_ca, "--tls-client-ca")
            context.load_verify_locations(cafile=config.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as exc:
        raise ValueError(f"--tls-cert {cert} / --tls-key {key}: not a usable certificate and key ({exc.reason or exc})") from exc
    return context


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
