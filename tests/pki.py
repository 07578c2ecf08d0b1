"""Test certificates made with the ``openssl`` command line (the ``cryptography`` package is not installed).

One home for the tests' PKI: tests/test_security.py and the others, and the loopback cluster
(tests/loopback.py, whose replicas serve TLS like the Kubernetes pods).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SERVER_NAMES = "IP:127.0.0.1,DNS:localhost"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path, server_names: str = SERVER_NAMES) -> Path:
    """In ``d``: a test CA (ca.pem/key), server.pem/key for ``server_names`` (subjectAltName entries)
    signed by it, a client.pem/key for mutual TLS, and an unrelated self-signed other.pem/key. Returns ``d``."""
    for name, subject, ext in (
        ("server", "/CN=embserve-test-server", f"subjectAltName={server_names}"),
        ("client", "/CN=embserve-test-client", "extendedKeyUsage=clientAuth"),
    ):
        if not (d / "ca.pem").exists():
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                    "-days", "2", "-subj", "/CN=embserve-test-ca", cwd=d)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    # A second, unrelated CA: its clients must not get in.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem",
            "-days", "2", "-subj", "/CN=someone-else", cwd=d)
    return d
