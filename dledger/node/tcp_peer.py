"""What both ends of the TCP peer transport share: where a peer listens, TLS contexts, and timing.

The peer port: a node on the TCP transport still serves gRPC (the client API, admin, health and snapshot
chunks) on its `dLegerPeers` address, and listens for peer frames on the port `peer_port_offset` above it
(`dledgerPeerPortOffset`, default 1000: a node at 127.0.0.1:40911 takes peer frames on 127.0.0.1:41911),
as RocketMQ derives its HA port from the broker's listen port. One address per node stays the only thing
operators write down; a port cannot be served by gRPC and a raw listener without sniffing its bytes.

TLS uses the same files as the gRPC side (`TlsConfig`): the listener requires a client certificate that
the CA signed (mutual TLS), the dialler verifies the listener's certificate and host name against the CA.

Invariants: `tcp_peer_address` raises `ValueError` naming the address when the derived port is outside
1..65535; the contexts read the PEM files once, when made (an unreadable file is a `ConfigError`).
"""

from __future__ import annotations

import ssl

from dledger.net.tls import TlsConfig, read_pem
from dledger.node.config import ConfigError, parse_address

__all__ = ["client_ssl_context", "peer_certificate_uris", "server_ssl_context", "tcp_peer_address"]


def tcp_peer_address(address: str, offset: int) -> tuple[str, int]:
    """(host, port) where the node at gRPC `address` takes peer frames."""
    host, port = parse_address(address)
    if not 1 <= port + offset <= 65535:
        raise ValueError(f"{address}: its peer port {port} + {offset} is outside 1..65535 (dledgerPeerPortOffset)")
    return host, port + offset


def _load(ctx: ssl.SSLContext, tls: TlsConfig) -> None:
    read_pem(tls.ca, "tls CA")  # a clear ConfigError for a missing or non-PEM file
    try:
        ctx.load_verify_locations(cafile=str(tls.ca))
        if tls.cert is not None and tls.key is not None:
            read_pem(tls.cert, "tls certificate")
            read_pem(tls.key, "tls key")
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except ssl.SSLError as exc:
        raise ConfigError(f"tls: cannot load the node's TLS files: {exc.reason or exc}") from None


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    if tls.cert is None or tls.key is None:
        raise ConfigError("tls: a node needs its own certificate and key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx, tls)
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx, tls)
    return ctx


def peer_certificate_uris(ssl_object: object) -> list[bytes]:
    """The URI SANs of the certificate the other end presented on this TLS connection ([] without one)."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return []
    cert = ssl_object.getpeercert()
    if not cert:
        return []
    sans = cert.get("subjectAltName", ())
    return [str(entry[1]).encode() for entry in sans if len(entry) == 2 and entry[0] == "URI"]
