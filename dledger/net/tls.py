"""TLS and mutual TLS for the node's endpoint, its peer links, and clients.

`TlsConfig` names PEM files: this side's certificate and key, and the CA that signs every legitimate peer
(and client). Invariants: with a `TlsConfig`, a node listens only with TLS and, when `require_client_cert`
is set (the default), refuses any connection whose client certificate the CA did not sign; peer links
present the node's own certificate and verify the other node against the CA. Files are read once, at
start; a missing or unreadable file is a `ConfigError` naming it.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import grpc

from dledger.net.addresses import ConfigError

__all__ = ["TlsConfig", "read_pem"]


def read_pem(path: str | pathlib.Path, what: str) -> bytes:
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{what}: {str(path)!r} is not a PEM file")
    return data


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """PEM paths. `cert`/`key` may be None for a client that presents no certificate."""

    ca: pathlib.Path
    cert: pathlib.Path | None = None
    key: pathlib.Path | None = None
    require_client_cert: bool = True

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("tls: give both a certificate and its key, or neither")

    def _pair(self) -> tuple[bytes, bytes] | None:
        if self.cert is None or self.key is None:
            return None
        return read_pem(self.key, "tls key"), read_pem(self.cert, "tls certificate")

    def server_credentials(self) -> grpc.ServerCredentials:
        pair = self._pair()
        if pair is None:
            raise ConfigError("tls: a node needs its own certificate and key")
        return grpc.ssl_server_credentials(
            [pair], root_certificates=read_pem(self.ca, "tls CA"), require_client_auth=self.require_client_cert
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        pair = self._pair()
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem(self.ca, "tls CA"),
            private_key=pair[0] if pair else None,
            certificate_chain=pair[1] if pair else None,
        )
