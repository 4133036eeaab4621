"""Helpers for the remoting tests: an in-process broker replica with its remoting face on a background event
loop, a route-only NameServer stand-in (GET_ROUTEINFO_BY_TOPIC from the store's topics) and the official C++
client (`rocketmq-python-cvs`), skipped with the reason when it cannot load.

Every wait polls a condition with a deadline; nothing sleeps a fixed time to let things settle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from dledger.broker_adapter import MessageStore, StoreOptions
from dledger.node.config import NodeConfig
from dledger.rocketmq.broker.config import RemotingConfig
from dledger.rocketmq.broker.face import RemotingBroker
from dledger.rocketmq.remoting import fastjson
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.transport import RemotingConnection, RemotingServer
from tests.node.cluster_util import peers_for

T = TypeVar("T")


def cpp_client_path() -> pathlib.Path:
    """Where rocketmq-python-cvs is installed: `$ROCKETMQ_CPP_CLIENT`, else `<venv>/rocketmq-cpp` (`pip install
    --target`; its package is also named `rocketmq` and would shadow the 5.x client's if installed beside it)."""
    return pathlib.Path(os.environ.get("ROCKETMQ_CPP_CLIENT") or pathlib.Path(sys.prefix) / "rocketmq-cpp")


@functools.cache
def _cpp_problem() -> str | None:
    path = cpp_client_path()
    if not (path / "rocketmq" / "client.py").exists():
        return f"the C++ RocketMQ client is not installed in {path} (pip install --target {path} rocketmq-python-cvs)"
    probe = subprocess.run(
        [sys.executable, "-c", "from rocketmq.client import Producer, PushConsumer"],
        env={**os.environ, "PYTHONPATH": str(path)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"the C++ RocketMQ client in {path} cannot load: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


def cpp_client() -> None:
    """Skip the test, saying why, when the C++ client (rocketmq-python-cvs) cannot run here."""
    problem = _cpp_problem()
    if problem is not None:
        pytest.skip(problem)


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")
        time.sleep(interval)


class RouteServer:
    """Answers GET_ROUTEINFO_BY_TOPIC with one broker (id 0 at `address()`) and `queues_of(topic)` queues (no
    route when None): the part of a NameServer the C++ client needs."""

    def __init__(self, broker_name: str, address: Callable[[], str], queues_of: Callable[[str], int | None]) -> None:
        self.broker_name = broker_name
        self.address = address
        self.queues_of = queues_of
        self.server = RemotingServer(self.handle)

    async def handle(self, cmd: RemotingCommand, conn: RemotingConnection) -> RemotingCommand:
        if cmd.code != RequestCode.GET_ROUTEINFO_BY_TOPIC:
            return cmd.response_to(ResponseCode.REQUEST_CODE_NOT_SUPPORTED, "route lookups only")
        topic = cmd.ext_fields.get("topic", "")
        queues = self.queues_of(topic)
        if queues is None:
            return cmd.response_to(ResponseCode.TOPIC_NOT_EXIST, f"No topic route info in name server for {topic}")
        route = {
            "queueDatas": [
                {"brokerName": self.broker_name, "readQueueNums": queues, "writeQueueNums": queues, "perm": 6,
                 "topicSysFlag": 0}
            ],
            "brokerDatas": [{"cluster": "c", "brokerName": self.broker_name, "brokerAddrs": {0: self.address()}}],
            "filterServerTable": {},
        }  # fmt: skip
        return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps(route))


class LoopThread:
    """An asyncio loop on a daemon thread; `run(coro)` waits for a coroutine's result from another thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class InProcessBroker:
    """One master replica (a one-node group), its remoting face and a route server, on a `LoopThread`."""

    def __init__(self, root: pathlib.Path, props: dict[str, str] | None = None, **options: Any) -> None:
        self.lt = LoopThread()
        self.root = root
        self.props = props or {}
        self.options = options

    def start(self) -> InProcessBroker:
        self.lt.run(self._start())
        return self

    async def _start(self) -> None:
        config = NodeConfig(self_id="s0", peers=peers_for(["s0"]), store_dir=self.root / "s0", group="b")
        self.store = MessageStore.create(config, StoreOptions(retention_interval_s=0, **self.options), seed=1)
        await self.store.start()
        deadline = time.monotonic() + 30
        while not self.store.is_master:
            assert time.monotonic() < deadline, "the store did not become master"
            await asyncio.sleep(0.01)
        self.broker = RemotingBroker(self.store, RemotingConfig.from_properties(self.props, listen_port=0))
        await self.broker.start()
        self.routes = RouteServer(
            "broker-a",
            lambda: f"127.0.0.1:{self.broker.port}",
            lambda topic: getattr(self.store.topic(topic), "queue_count", None),
        )
        await self.routes.server.start("127.0.0.1", 0)

    @property
    def namesrv(self) -> str:
        return f"127.0.0.1:{self.routes.server.port}"

    def create_topic(self, name: str, queues: int = 4) -> None:
        self.lt.run(self.store.create_topic(name, queues))

    def stop(self) -> None:
        async def _stop() -> None:
            await self.routes.server.close()
            await self.broker.stop()
            await self.store.stop()

        try:
            self.lt.run(_stop())
        finally:
            self.lt.close()


class Worker:
    """A `cpp_worker` process (the C++ client); `records()` are its JSON lines so far; `kill()` ends it."""

    def __init__(self, out_dir: pathlib.Path, name: str, *args: str) -> None:
        self.path = out_dir / f"{name}.jsonl"
        self.log = out_dir / f"{name}.err"
        root = pathlib.Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cpp_client_path()), str(root)])}
        with open(self.path, "wb") as out, open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.rocketmq_remoting.cpp_worker", *args],
                cwd=root, stdout=out, stderr=err, env=env,
            )  # fmt: skip

    def records(self) -> list[dict[str, Any]]:
        lines = self.path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]

    def messages(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if "body" in r and "i" not in r]

    def wait_started(self, timeout: float = 60.0) -> None:
        eventually(
            f"{self.path.stem} started",
            lambda: self._alive() and any(r.get("started") for r in self.records()),
            timeout,
        )

    def wait_done(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        eventually(
            f"{self.path.stem} done",
            lambda: any(r.get("done") for r in self.records()) or self.proc.poll() is not None,
            timeout,
        )
        if not any(r.get("done") for r in self.records()):
            raise AssertionError(f"{self.path.stem} exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        return [r for r in self.records() if "i" in r]

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.path.stem} exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


__all__ = ["InProcessBroker", "LoopThread", "RouteServer", "Worker", "cpp_client", "eventually"]
