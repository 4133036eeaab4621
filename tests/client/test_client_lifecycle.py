"""Client lifetimes: a client dropped without `close()` must neither hang the process at exit nor leak
silently (a ResourceWarning names it), and both clients close their channels as context managers."""

from __future__ import annotations

import asyncio
import gc
import pathlib
import subprocess
import sys
import warnings
import weakref
from collections.abc import Iterator

import grpc
import pytest

from dledger.client.aio_client import AsyncDLedgerClient
from dledger.client.client import DLedgerClient
from dledger.client.client_policy import DLedgerError
from dledger.node.config import format_peers
from tests.node.procs import ProcessGroup
from tests.support import ROOT

pytestmark = pytest.mark.process

# Threads that each append through their own client and never close it; once the parent has stopped the
# nodes, the script returns from main and the interpreter must exit.
_UNCLOSED_SCRIPT = """
import sys, threading
from dledger.client.client import DLedgerClient
from dledger.client.client_policy import DLedgerError
from dledger.node.config import format_peers

peers, group, keep = sys.argv[1], sys.argv[2], sys.argv[3] == "keep"
clients = []

def work(k):
    client = DLedgerClient(peers, group=group, timeout=30, rpc_timeout=5)
    if keep:
        clients.append(client)
    for i in range(5):
        client.append(f"t{k}-{i}".encode())
    client.status()

threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("appended", flush=True)
sys.stdin.readline()  # the parent stops the nodes, then says go on
print("exiting", flush=True)
"""


@pytest.fixture
def group(tmp_path: pathlib.Path) -> Iterator[ProcessGroup]:
    g = ProcessGroup(tmp_path)
    yield g
    g.stop_all()


@pytest.mark.parametrize("keep", ["keep", "drop"])
def test_unclosed_clients_in_threads_do_not_hang_the_process_at_exit(group: ProcessGroup, keep: str) -> None:
    """`keep`: the clients are still referenced at exit; `drop`: each is dropped when its thread ends."""
    group.start_all()
    group.wait_for_leader(timeout=60)
    proc = subprocess.Popen(
        [sys.executable, "-W", "always::ResourceWarning", "-c", _UNCLOSED_SCRIPT,
         format_peers(group.peers), group.group, keep],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        assert line.strip() == "appended", proc.stderr.read() if proc.stderr else line
        group.stop_all()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("a process with unclosed clients did not exit within 60 s of finishing its work")
    assert proc.returncode == 0, err
    assert "exiting" in out
    # each client's finalizer ran (at collection, or at exit for the ones still referenced) and said so
    assert err.count("ResourceWarning: unclosed DLedgerClient") == 4, err


def test_a_client_collected_unclosed_warns_and_closes_its_channels() -> None:
    client = DLedgerClient("n0-127.0.0.1:1", rpc_timeout=0.2)
    client.status()  # opens a channel
    channel = client._nodes["n0"].channel
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) and "DLedgerClient" in str(w.message) for w in caught)
    with pytest.raises(ValueError):  # gRPC refuses calls on a closed channel
        channel.unary_unary("/x")(b"", timeout=0.1)


def test_a_closed_client_refuses_calls_instead_of_opening_channels_again() -> None:
    client = DLedgerClient("n0-127.0.0.1:1", rpc_timeout=0.2)
    client.close()
    client.close()
    with pytest.raises(DLedgerError, match="closed"):
        client.append(b"x")
    assert client.closed and not client._nodes


def test_a_closed_client_does_not_warn() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with DLedgerClient("n0-127.0.0.1:1", rpc_timeout=0.2) as client:
            client.status()
        del client
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_async_client_as_a_context_manager_closes_its_channels_and_an_unclosed_one_warns() -> None:
    async def main() -> None:
        async with AsyncDLedgerClient("n0-127.0.0.1:1", rpc_timeout=0.2) as client:
            await client.status()
            channels = list(client._channels.values())
        assert channels and all(c.get_state() == grpc.ChannelConnectivity.SHUTDOWN for c in channels)
        with pytest.raises(DLedgerError):
            await client.append(b"after close")
        leaked = AsyncDLedgerClient("n0-127.0.0.1:1", rpc_timeout=0.2)
        await leaked.status()
        refs = [weakref.ref(c) for c in leaked._channels.values()]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del leaked
            gc.collect()
        assert any(issubclass(w.category, ResourceWarning) and "AsyncDLedgerClient" in str(w.message) for w in caught)
        assert refs and all(r() is None for r in refs)  # gRPC closes a channel as it is collected

    asyncio.run(main())
