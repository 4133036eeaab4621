"""A follower's writes go to the master: `Forwarder` relays a write request to the leader's remoting face.

Only the master writes (sends, send-backs, offset commits, transaction ends, topic and group changes). A
follower that receives one relays the request as it came (same header fields and body, so an ACL signature
still verifies) to the leader's `listenPort` and answers with the leader's response: a client whose route
still names the old master, in the seconds after a failover, has its send stored instead of refused.

Invariants:
- a relayed request carries `FORWARDED` and is never relayed again: a replica that receives one and is not
  master answers it itself (SERVICE_NOT_AVAILABLE from the handler), so a request crosses at most one hop
  and two replicas that each think the other leads never bounce it between them;
- when the leader is unknown, is this replica, has no known remoting address (see `remotingPeers`), or does
  not answer in time, the request is not relayed and the handler answers it here (SERVICE_NOT_AVAILABLE
  naming the leader, which makes RocketMQ clients retry), or the relay answers SERVICE_NOT_AVAILABLE with
  one line saying why: never silence for a two-way request;
- a oneway request is relayed as a two-way one (its answer is dropped), so it is never lost silently on
  the follower's side of the hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dledger.rocketmq.broker.context import BrokerContext
from dledger.rocketmq.remoting.acl import RELAYED_BY
from dledger.rocketmq.remoting.codes import FLAG_ONEWAY, RequestCode, ResponseCode, code_name
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.errors import RemotingError
from dledger.rocketmq.remoting.transport import RemotingConnection, connect

__all__ = ["FORWARDED", "WRITES", "Forwarder"]

log = logging.getLogger("dledger.rocketmq.broker.forward")

FORWARDED = RELAYED_BY  # header field of a relayed request (left out of ACL signatures)
RELAY_TIMEOUT_S = 10.0
R = RequestCode
WRITES = frozenset({
    R.SEND_MESSAGE, R.SEND_MESSAGE_V2, R.SEND_BATCH_MESSAGE, R.CONSUMER_SEND_MSG_BACK, R.UPDATE_CONSUMER_OFFSET,
    R.END_TRANSACTION, R.UPDATE_AND_CREATE_TOPIC, R.DELETE_TOPIC_IN_BROKER, R.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
    R.DELETE_SUBSCRIPTIONGROUP, R.INVOKE_BROKER_TO_RESET_OFFSET,
})  # fmt: skip


class Forwarder:
    """Relays write requests of a follower to the leader over one connection per leader address."""

    def __init__(self, ctx: BrokerContext) -> None:
        self.ctx = ctx
        self._conns: dict[str, RemotingConnection] = {}
        self._lock = asyncio.Lock()

    def target(self, cmd: RemotingCommand) -> str | None:
        """The leader's remoting address when this request is to be relayed there, else None."""
        if cmd.code not in WRITES or FORWARDED in cmd.ext_fields or self.ctx.store.is_master:
            return None
        cfg = self.ctx.config
        leader = self.ctx.store.leader_address()
        address = cfg.remoting_peers.get(leader, "") if leader else ""
        return address if address and address != cfg.address else None

    async def relay(self, cmd: RemotingCommand, address: str) -> RemotingCommand:
        fields = {**cmd.ext_fields, FORWARDED: self.ctx.config.address}
        relayed = RemotingCommand(
            cmd.code, language=cmd.language, version=cmd.version, opaque=0, flag=cmd.flag & ~FLAG_ONEWAY,
            remark=cmd.remark, ext_fields=fields, body=cmd.body, serialize_type=cmd.serialize_type,
        )  # fmt: skip
        try:
            conn = await self._connection(address)
            answer = await conn.request(relayed, RELAY_TIMEOUT_S)
        except RemotingError as exc:
            log.info("relaying %s to the leader at %s failed: %s", code_name(cmd.code), address, exc)
            return cmd.response_to(
                ResponseCode.SERVICE_NOT_AVAILABLE, f"not the master; relaying to the leader at {address} failed: {exc}"
            )
        return cmd.response_to(answer.code, answer.remark, answer.ext_fields, answer.body)

    async def _connection(self, address: str) -> RemotingConnection:
        async with self._lock:
            conn = self._conns.get(address)
            if conn is None or not conn.is_open:
                conn = await connect(address, timeout=3.0)
                self._conns[address] = conn
            return conn

    async def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        for conn in self._conns.values():
            with contextlib.suppress(Exception):
                await conn.wait_closed()
        self._conns.clear()
