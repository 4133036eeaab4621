"""Addresses and the peers string, shared by the node's configuration and the clients.

`parse_address` reads `host:port` or `[v6]:port`; `parse_peers` reads DLedger's peers string
(`n0-127.0.0.1:40911;n1-127.0.0.1:40912`) and `format_peers` writes it. Invariants of what they return: every
node id is a non-empty token without `-` or `;` (the peers string uses them as separators), ids are unique,
every address is `host:port` with 1 <= port <= 65535. A bad value raises `ConfigError` naming the key and the
value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["ConfigError", "check_token", "format_peers", "parse_address", "parse_peers"]

_TOKEN = re.compile(r"^[A-Za-z0-9_.]+$")
_HOST = re.compile(r"^[A-Za-z0-9_.:%-]+$")  # a DNS name, an IPv4 address or an IPv6 one (with a %zone)


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key and the value."""


def parse_address(text: str, *, key: str = "address") -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{key}: {text!r} is not host:port with a port in 1..65535")
    if not _HOST.match(host):
        raise ConfigError(f"{key}: {text!r} is not host:port (the host {host!r} is not a name or an IP address)")
    return host, int(port_text)


def parse_peers(text: str, *, key: str = "dLegerPeers") -> dict[str, str]:
    """`n0-127.0.0.1:40911;n1-127.0.0.1:40912` -> {"n0": "127.0.0.1:40911", ...}, in the given order."""
    if "," in text:
        raise ConfigError(f"{key}: {text!r}: separate the peers with ';' (ID-host:port;ID-host:port), not ','")
    peers: dict[str, str] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        node_id, sep, address = part.partition("-")
        if not sep:
            raise ConfigError(f"{key}: {part!r} is not ID-host:port")
        check_token(node_id, key=key)
        parse_address(address, key=key)
        if node_id in peers:
            raise ConfigError(f"{key}: node id {node_id!r} appears twice")
        peers[node_id] = address.strip()
    if not peers:
        raise ConfigError(f"{key}: {text!r} names no peers")
    return peers


def format_peers(peers: Mapping[str, str]) -> str:
    """The inverse of `parse_peers`."""
    return ";".join(f"{node_id}-{address}" for node_id, address in peers.items())


def check_token(value: str, *, key: str) -> None:
    if not _TOKEN.match(value):
        raise ConfigError(f"{key}: {value!r} must be letters, digits, '_' or '.' (no '-' or ';')")
