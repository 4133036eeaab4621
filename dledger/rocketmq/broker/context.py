"""What every remoting handler of the broker works with (`BrokerContext`), and how it reads request headers.

Header fields arrive as strings in a request's `ext_fields` and are untrusted: `field_text`, `int_field`,
`name_field` and `bool_field` raise `HeaderError` (one line naming the field) for a missing or malformed
value, which the broker answers with SYSTEM_ERROR and that line as the remark, as RocketMQ answers a header
it cannot decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from dledger.broker_adapter import Message, MessageStore, PutResult, StoreError
from dledger.broker_adapter.results import check_name
from dledger.rocketmq.broker.batcher import PutBatcher
from dledger.rocketmq.broker.clients import ClientRegistry
from dledger.rocketmq.broker.config import RemotingConfig
from dledger.rocketmq.broker.storemap import host_of
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.msgformat import Host

__all__ = ["BrokerContext", "HeaderError", "bool_field", "field_text", "int_field", "name_field"]

log = logging.getLogger("dledger.rocketmq.broker.face")

_INT64 = (-(2**63), 2**63 - 1)


class HeaderError(ValueError):
    """A request header field is missing or malformed."""


def field_text(cmd: RemotingCommand, name: str, default: str | None = None) -> str:
    value = cmd.ext_fields.get(name)
    if value is None:
        if default is None:
            raise HeaderError(f"the header field {name!r} is missing")
        return default
    return value


def name_field(cmd: RemotingCommand, name: str, kind: str) -> str:
    """A topic or group name field, checked as the store checks names (HeaderError saying why)."""
    value = field_text(cmd, name)
    try:
        check_name(kind, value)
    except StoreError as exc:
        raise HeaderError(f"the header field {name!r}: {exc.reason}"[:300]) from None
    return value


def int_field(cmd: RemotingCommand, name: str, default: int | None = None) -> int:
    value = cmd.ext_fields.get(name)
    if value is None or (value == "" and default is not None):
        if default is None:
            raise HeaderError(f"the header field {name!r} is missing")
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise HeaderError(f"the header field {name!r} is not an integer: {value[:40]!r}") from None
    if not _INT64[0] <= number <= _INT64[1]:
        raise HeaderError(f"the header field {name!r} is out of range")
    return number


def bool_field(cmd: RemotingCommand, name: str, default: bool = False) -> bool:
    value = cmd.ext_fields.get(name)
    return default if value is None else value.strip().lower() == "true"


Waiter = Callable[[float], Awaitable[None]]


async def _poll(timeout: float) -> None:
    await asyncio.sleep(min(timeout, 0.05))


@dataclass
class BrokerContext:
    """The store, the settings, the client registry and the long-poll waiter of one replica's remoting face.

    `wait_applied(timeout)` returns after the store applies more entries (or after `timeout` s); without one
    the face polls every 50 ms."""

    store: MessageStore
    config: RemotingConfig
    clients: ClientRegistry = field(default_factory=ClientRegistry)
    wait_applied: Waiter = _poll
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    on_topics_changed: list[Callable[[], None]] = field(default_factory=list)
    batcher: PutBatcher | None = None  # group commit of concurrent sends (see `batcher.py`)
    seen_topics: dict[str, float] = field(default_factory=dict)  # topic -> when a send last saw it exist
    config_version: int = 0  # how many times UPDATE_BROKER_CONFIG changed `config` (see `admin_config.py`)
    config_changed_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def put(self, msgs: Sequence[Message]) -> Awaitable[PutResult]:
        if self.batcher is None:
            self.batcher = PutBatcher(self.store)
        return self.batcher.put(msgs)

    def topics_changed(self) -> None:
        """Tell the listeners (the NameServer registration) that this replica created a topic."""
        for callback in self.on_topics_changed:
            try:
                callback()
            except Exception as exc:
                log.warning("a topics-changed listener failed: %s", exc)

    @property
    def store_host(self) -> Host:
        return host_of(self.config.address)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run `coro` in the background; its failure is logged as one line naming `what`."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what))

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s failed: %s", what, str(task.exception()).splitlines()[0] if str(task.exception()) else
                        type(task.exception()).__name__)  # fmt: skip

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await task
