"""The loopback link proxies (the non-root partition fallback) against two echo servers."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from jepsen_like.proxy import LinkProxies


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxies() -> Iterator[LinkProxies]:
    servers = [socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) for _ in range(2)]
    for s in servers:
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
    p = LinkProxies({f"n{k}": f"127.0.0.1:{s.server_address[1]}" for k, s in enumerate(servers)})
    p.start()
    yield p
    p.stop()
    for s in servers:
        s.shutdown()
        s.server_close()


def _connect(p: LinkProxies, a: str, b: str) -> socket.socket:
    host, _, port = p.peers_for(a)[b].rpartition(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _echoes(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        sock.sendall(b"ping")
        return sock.recv(4) == b"ping"
    except (TimeoutError, OSError):
        return False


def test_each_node_gets_its_own_address_and_proxies_for_the_others(proxies: LinkProxies) -> None:
    mine = proxies.peers_for("n0")
    assert mine["n0"] == proxies.addresses["n0"] and mine["n1"] != proxies.addresses["n1"]
    assert mine["n1"].startswith("127.0.0.1:")


def test_cut_closes_links_blackholes_new_ones_and_heal_restores(proxies: LinkProxies) -> None:
    live = _connect(proxies, "n0", "n1")
    assert _echoes(live)
    proxies.partition({frozenset(("n0", "n1"))})
    assert not _echoes(live)  # the open connection was closed by the cut
    for a, b in (("n0", "n1"), ("n1", "n0")):  # both directions: accepted, then nothing comes back
        held = _connect(proxies, a, b)
        assert not _echoes(held, timeout=0.3)
        held.close()
    proxies.heal()
    fresh = _connect(proxies, "n1", "n0")
    assert _echoes(fresh)
    for s in (live, fresh):
        s.close()


def test_proxies_never_take_a_port_the_run_chose_for_a_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ports chosen and released earlier can come back from the kernel: a proxy listening on a node's own
    port (or its endpoint's) kept that node from ever starting."""
    from jepsen_like import proxy

    handed = iter([[41001, 42001, 41002, 42002, 42003, 42004, 42005, 42006, 42007, 42008]])
    monkeypatch.setattr(proxy, "free_ports", lambda n: next(handed)[:n])
    links = proxy.LinkProxies({"a": "127.0.0.1:41001", "b": "127.0.0.1:41002"}, avoid=[41001, 41002, 42001])
    assert set(links.ports.values()) == {42002, 42003}
