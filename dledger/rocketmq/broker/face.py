"""`RemotingBroker`: one replica's RocketMQ remoting face (RocketMQ 4.x clients and tools) on its store.

It listens on `listenPort` and answers each request code with the handler module that owns it (`send`,
`pull`, `offsets`, `consumers`, `transactions`, `admin`, `admin_stats`, `subgroups`, `admin_lookup`,
`admin_reset`, `admin_config`); every other code
answers REQUEST_CODE_NOT_SUPPORTED with a remark naming it. With `accessKey` / `secretKey` or `aclFile`
set, a request the accounts do not allow (see `access.py`) answers SYSTEM_ERROR saying why, as RocketMQ's
broker does. Any replica answers reads; a follower relays writes to the master (`forward.py`). A header it
cannot read answers SYSTEM_ERROR with one line; a handler that fails unexpectedly answers SYSTEM_ERROR and
logs one line, never a traceback to the client and never
silence for a two-way request.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

from dledger.broker_adapter import MessageStore, StoreError
from dledger.rocketmq.broker import (
    admin,
    admin_config,
    admin_lookup,
    admin_reset,
    admin_stats,
    consumers,
    forward,
    offsets,
    pull,
    send,
    subgroups,
    transactions,
)
from dledger.rocketmq.broker.clients import ClientRegistry
from dledger.rocketmq.broker.config import RemotingConfig
from dledger.rocketmq.broker.context import BrokerContext, HeaderError, Waiter
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode, code_name
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.transport import RemotingConnection, RemotingServer

__all__ = ["RemotingBroker"]

log = logging.getLogger("dledger.rocketmq.broker.face")

Handler = Callable[[BrokerContext, RemotingCommand, object], Awaitable[RemotingCommand]]

R = RequestCode
HANDLERS: dict[int, Handler] = {
    R.SEND_MESSAGE: send.send_message,
    R.SEND_MESSAGE_V2: send.send_message,
    R.SEND_BATCH_MESSAGE: send.send_message,
    R.CONSUMER_SEND_MSG_BACK: send.send_message_back,
    R.PULL_MESSAGE: pull.pull_message,
    R.QUERY_CONSUMER_OFFSET: offsets.query_consumer_offset,
    R.UPDATE_CONSUMER_OFFSET: offsets.update_consumer_offset,
    R.GET_MAX_OFFSET: offsets.max_offset,
    R.GET_MIN_OFFSET: offsets.min_offset,
    R.SEARCH_OFFSET_BY_TIMESTAMP: offsets.search_offset,
    R.GET_EARLIEST_MSG_STORETIME: offsets.earliest_store_time,
    R.HEART_BEAT: consumers.heart_beat,
    R.UNREGISTER_CLIENT: consumers.unregister_client,
    R.GET_CONSUMER_LIST_BY_GROUP: consumers.get_consumer_list,
    R.LOCK_BATCH_MQ: consumers.lock_batch,
    R.UNLOCK_BATCH_MQ: consumers.unlock_batch,
    R.END_TRANSACTION: transactions.end_transaction,
    **admin.HANDLERS,
    **admin_stats.HANDLERS,
    **subgroups.HANDLERS,
    **admin_lookup.HANDLERS,
    **admin_reset.HANDLERS,
    **admin_config.HANDLERS,
}


class RemotingBroker:
    """Serve `store` to remoting clients: `await start()`, `await stop()`; `port` once started."""

    def __init__(self, store: MessageStore, config: RemotingConfig, wait_applied: Waiter | None = None) -> None:
        self.ctx = BrokerContext(store, config, ClientRegistry())
        if wait_applied is not None:
            self.ctx.wait_applied = wait_applied
        self.server = RemotingServer(self.handle)
        self.checker = transactions.TransactionChecker(self.ctx)
        self.forwarder = forward.Forwarder(self.ctx)
        self.access = config.access

    @property
    def port(self) -> int:
        return self.server.port

    def on_topics_changed(self, callback: Callable[[], None]) -> None:
        """`callback()` after this face created a topic (a retry or dead-letter topic): register again."""
        self.ctx.on_topics_changed.append(callback)

    async def start(self) -> None:
        """Listen on `listenPort` (OSError when it cannot)."""
        await self.server.start(self.ctx.config.listen_host, self.ctx.config.listen_port)
        if self.ctx.config.listen_port == 0:  # the port the system picked is the one in message ids
            self.ctx.config = dataclasses.replace(self.ctx.config, listen_port=self.port)
        self.checker.start()
        log.info("remoting face listening on port %d (clients use %s)", self.port, self.ctx.config.address)

    async def stop(self) -> None:
        await self.checker.stop()
        await self.forwarder.close()
        await self.server.close()
        await self.ctx.close()

    async def handle(self, cmd: RemotingCommand, conn: RemotingConnection) -> RemotingCommand | None:
        if self.access is not None:
            problem = self.access.authorize(cmd)
            if problem is not None:  # RocketMQ's broker answers its ACL hook's AclException so
                return cmd.response_to(ResponseCode.SYSTEM_ERROR, f"AclException: {problem}"[:500])
        handler = HANDLERS.get(cmd.code)
        leader = self.forwarder.target(cmd) if handler is not None else None
        if leader is not None:  # a write on a follower: the master answers it (see `forward.py`)
            return await self.forwarder.relay(cmd, leader)
        if handler is None:
            return cmd.response_to(
                ResponseCode.REQUEST_CODE_NOT_SUPPORTED, f"request type {code_name(cmd.code)} not supported"
            )
        try:
            return await handler(self.ctx, cmd, conn)
        except HeaderError as exc:
            return cmd.response_to(ResponseCode.SYSTEM_ERROR, str(exc))
        except StoreError as exc:
            return cmd.response_to(ResponseCode.SERVICE_NOT_AVAILABLE, f"{exc.status.value}: {exc.reason}"[:500])
        except Exception as exc:
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("%s from %s failed: %s", code_name(cmd.code), conn.peer, line)
            return cmd.response_to(ResponseCode.SYSTEM_ERROR, f"{type(exc).__name__}: {line}"[:500])
