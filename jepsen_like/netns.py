"""Network namespaces for real partitions (root only): one netns per node, veth pairs into one bridge.

Layout for run tag T (4 hex digits) and node k: netns `jlT-nk` holding `eth0` (10.213.S.(11+k)/24, the
peer end of veth `jlTvk` whose host end is enslaved to bridge `jlTbr` (10.213.S.1/24, in the root
namespace, so that the controller and the client processes reach every node directly). Partitions are
nftables rules in each node's namespace (table `inet jepsen`): a cut between a and b drops a's packets to
and from b, in both namespaces, so the cut is symmetric and clients are never cut off (as in Jepsen, only
links between nodes fail).

Invariants: every resource created is first recorded in a state file under `STATE_DIR` (so `cleanup` finds
it even after a crash of the controller); `teardown` removes exactly what the state file lists; nothing
outside our namespaces and our bridge is touched, and no traffic leaves 10.213.S.0/24 and loopback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

from jepsen_like.procutil import STATE_DIR, RunState, kill_pid_if_ours, owner_alive

__all__ = ["NetnsNetwork", "cleanup_all", "is_root", "netns_supported", "teardown_state"]

TABLE = "jepsen"


def is_root() -> bool:
    return os.geteuid() == 0


def _run(*cmd: str, input_: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), input=input_, capture_output=True, text=True, check=check, timeout=30)


def netns_supported() -> str | None:
    """None if namespaces, bridges and nftables work here; else why not."""
    if not is_root():
        return "not root"
    for tool in ("ip", "nft"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            return f"`{tool}` is not installed (apt-get install iproute2 nftables)"
    return None


def _used_subnets() -> set[int]:
    out = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
    used = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = ipaddress.ip_interface(parts[parts.index("inet") + 1])
            if str(addr.ip).startswith("10.213."):
                used.add(int(str(addr.ip).split(".")[2]))
    return used


class NetnsNetwork:
    """Namespaces, veths, a bridge and nftables cuts for `node_ids`. Use `setup()`, then `teardown()`."""

    def __init__(self, node_ids: Sequence[str], state: RunState) -> None:
        self.node_ids = list(node_ids)
        self.state = state
        self.tag = state.tag
        used = _used_subnets()
        start = int(self.tag, 16) % 254  # from the random tag, so that runs started together rarely collide
        self.subnet = next(1 + (start + k) % 254 for k in range(254) if 1 + (start + k) % 254 not in used)
        self.bridge = f"jl{self.tag}br"
        self.cuts: set[frozenset[str]] = set()

    # ---- addresses and names ----
    def netns(self, node_id: str) -> str:
        return f"jl{self.tag}-n{self.node_ids.index(node_id)}"

    def ip(self, node_id: str) -> str:
        return f"10.213.{self.subnet}.{11 + self.node_ids.index(node_id)}"

    def host_ip(self) -> str:
        return f"10.213.{self.subnet}.1"

    def exec_prefix(self, node_id: str) -> list[str]:
        """Prefix a command with this to run it inside the node's namespace (`ip netns exec` execs it, so
        the child's pid is the command's pid)."""
        return ["ip", "netns", "exec", self.netns(node_id)]

    # ---- lifecycle ----
    def setup(self) -> None:
        try:
            self.state.add("links", self.bridge)
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.host_ip()}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for k, node_id in enumerate(self.node_ids):
                ns, host_end, peer_end = self.netns(node_id), f"jl{self.tag}v{k}", f"jl{self.tag}p{k}"
                self.state.add("netns", ns)
                self.state.add("links", host_end)
                _run("ip", "netns", "add", ns)
                _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", peer_end)
                _run("ip", "link", "set", peer_end, "netns", ns)
                _run("ip", "link", "set", host_end, "master", self.bridge)
                _run("ip", "link", "set", host_end, "up")
                inside = self.exec_prefix(node_id)
                _run(*inside, "ip", "link", "set", "lo", "up")
                _run(*inside, "ip", "link", "set", peer_end, "name", "eth0")
                _run(*inside, "ip", "addr", "add", f"{self.ip(node_id)}/24", "dev", "eth0")
                _run(*inside, "ip", "link", "set", "eth0", "up")
            self.heal()
        except BaseException:
            self.teardown()
            raise

    def teardown(self) -> None:
        """Remove the namespaces and links (processes are the cluster's to stop)."""
        teardown_state({"netns": self.state.data["netns"], "links": self.state.data["links"]})
        self.state.data["netns"], self.state.data["links"] = [], []
        self.state.save()

    # ---- faults ----
    def partition(self, cuts: Iterable[frozenset[str]]) -> None:
        """Replace the current cuts with `cuts` (pairs of node ids that cannot talk)."""
        self.cuts = {c for c in cuts if len(c) == 2}
        for node_id in self.node_ids:
            blocked = sorted(self.ip(other) for c in self.cuts if node_id in c for other in c if other != node_id)
            rules = "".join(f"add rule inet {TABLE} input ip saddr {ip} drop\n"
                            f"add rule inet {TABLE} output ip daddr {ip} drop\n" for ip in blocked)  # fmt: skip
            script = (
                f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n"
                f" chain input {{ type filter hook input priority 0; policy accept; }}\n"
                f" chain output {{ type filter hook output priority 0; policy accept; }}\n}}\n{rules}"
            )
            _run(*self.exec_prefix(node_id), "nft", "-f", "-", input_=script)

    def heal(self) -> None:
        self.partition(())


def teardown_state(created: dict[str, Any]) -> None:
    """Kill the recorded processes (if still ours), then delete namespaces and links."""
    for pid in created.get("pids", []):
        kill_pid_if_ours(int(pid))
    for ns in created.get("netns", []):
        _run("ip", "netns", "del", ns, check=False)  # removes its veth end, its nft table and, so, the pair
    for link in created.get("links", []):
        _run("ip", "link", "del", link, check=False)


def cleanup_all(force: bool = False) -> list[str]:
    """Remove every namespace, link and process recorded by the state file of a run whose controller is gone
    (with `force`, also of running ones); returns what was done."""
    done: list[str] = []
    if not STATE_DIR.exists():
        return done
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            created = json.loads(path.read_text())
        except (OSError, ValueError):
            created = {}
        if owner_alive(created) and not force:
            done.append(f"{path.name}: skipped, its run is still going (pid {created.get('owner')}; --force)")
            continue
        if (created.get("netns") or created.get("links")) and not is_root():
            done.append(f"{path.name}: needs root to remove {created}")
            continue
        teardown_state(created)
        done.append(f"{path.name}: removed {created}")
        path.unlink(missing_ok=True)
    return done
