"""Transactional messages through remoting: END_TRANSACTION, and CHECK_TRANSACTION_STATE sent back to the
producers of a half message that stays unresolved.

A send with `TRAN_MSG=true` (or the prepared transaction sys flag) is stored as the store's prepared message:
invisible until END_TRANSACTION commits it (commitOrRollback 8) or rolls it back (12); 0 (unknown) leaves
it prepared. On the master, `TransactionChecker` looks every `transactionTimeOut / 2` for prepared messages
older than `transactionTimeOut` and sends each, at most once per `transactionCheckInterval`, a oneway
CHECK_TRANSACTION_STATE (header and the message in the stored format) to one producer of its producer
group (`PGROUP`) connected to this replica; the producer answers with END_TRANSACTION.
"""

from __future__ import annotations

import asyncio
import logging
import time

from dledger.broker_adapter import StoreError
from dledger.rocketmq.broker.context import BrokerContext, field_text, int_field
from dledger.rocketmq.broker.storemap import SYSTEM_PREFIX, physical_offset, to_message_ext
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.msgformat import (
    TRANSACTION_COMMIT_TYPE,
    TRANSACTION_ROLLBACK_TYPE,
    encode_stored,
    offset_msg_id,
)

__all__ = ["TransactionChecker", "end_transaction"]

log = logging.getLogger("dledger.rocketmq.broker.face")


async def end_transaction(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    kind = int_field(cmd, "commitOrRollback")
    msg_id = field_text(cmd, "transactionId", "") or field_text(cmd, "msgId")
    if kind not in (TRANSACTION_COMMIT_TYPE, TRANSACTION_ROLLBACK_TYPE):
        return cmd.response_to(ResponseCode.SUCCESS, "the transaction stays prepared (state unknown)")
    try:
        found = await ctx.store.end_transaction(msg_id, kind == TRANSACTION_COMMIT_TYPE)
    except StoreError as exc:
        return cmd.response_to(ResponseCode.SERVICE_NOT_AVAILABLE, exc.reason[:500])
    if not found:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, f"no prepared message {msg_id[:80]!r}")
    return cmd.response_to(ResponseCode.SUCCESS)


class TransactionChecker:
    """The master's loop that asks producers about prepared messages left unresolved."""

    def __init__(self, ctx: BrokerContext) -> None:
        self.ctx = ctx
        self._checked: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.config.tx_timeout_ms / 2000)
            try:
                await self.check()
            except Exception as exc:
                log.warning("transaction check failed: %s", str(exc).splitlines()[0] if str(exc) else exc)

    async def check(self) -> int:
        """One pass on the master: a check to a producer for each overdue prepared message; how many sent."""
        store, cfg = self.ctx.store, self.ctx.config
        if not store.is_master or store.reader is None:
            return 0
        now, mono, sent = store.options.clock(), time.monotonic(), 0
        for msg_id in store.reader.prepared_ids():
            last = self._checked.get(msg_id)
            if last is not None and mono - last < cfg.tx_check_interval_ms / 1000:
                continue
            stored = await store.query_by_id(msg_id)
            if stored is None or now - stored.store_timestamp < cfg.tx_timeout_ms:
                continue
            group = stored.message.properties.get(SYSTEM_PREFIX + "PGROUP", "")
            conns = [c for c, _ in self.ctx.clients.producers.get(group, {}).values() if getattr(c, "is_open", False)]
            if not conns:
                continue
            phys = physical_offset(stored.log_index, stored.log_pos)
            offset_id = offset_msg_id(self.ctx.store_host, phys)
            fields = {
                "tranStateTableOffset": str(stored.queue_offset), "commitLogOffset": str(phys), "msgId": msg_id,
                "transactionId": msg_id, "offsetMsgId": offset_id,
            }  # fmt: skip
            body = encode_stored(to_message_ext(stored, self.ctx.store_host))
            conns[0].send_oneway(RemotingCommand.request(RequestCode.CHECK_TRANSACTION_STATE, fields, body))
            self._checked[msg_id] = mono
            sent += 1
        if len(self._checked) > 100_000:
            self._checked.clear()
        return sent
