"""The NameServer's request processor: one remoting request in, its response out (RocketMQ's
`DefaultRequestProcessor` and `ClientRequestProcessor`).

Answers REGISTER_BROKER, UNREGISTER_BROKER, BROKER_HEARTBEAT, QUERY_DATA_VERSION, GET_ROUTEINFO_BY_TOPIC,
GET_BROKER_CLUSTER_INFO, GET_ALL_TOPIC_LIST_FROM_NAMESERVER, GET_TOPICS_BY_CLUSTER, DELETE_TOPIC_IN_NAMESRV,
PUT_KV_CONFIG, GET_KV_CONFIG, DELETE_KV_CONFIG and GET_KVLIST_BY_NAMESPACE with RocketMQ's headers and
bodies; every other code gets REQUEST_CODE_NOT_SUPPORTED with a remark naming it.

Invariants: the processor does no I/O and reads time only through its `clock` (seconds), so tests drive
expiry without sleeping; a missing or malformed header field or body answers SYSTEM_ERROR with a one-line
remark (as RocketMQ answers a RemotingCommandException), never an exception out of `process`.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Hashable

from dledger.rocketmq.namesrv.bodies import (
    BodyError,
    decode_data_version_json,
    decode_register_body,
    encode_data_version,
    encode_kv_table,
    encode_topic_list,
)
from dledger.rocketmq.namesrv.kvconfig import NAMESPACE_ORDER_TOPIC_CONFIG, KVConfig
from dledger.rocketmq.namesrv.routes import DEFAULT_BROKER_TIMEOUT_MS, RouteTable
from dledger.rocketmq.remoting import RemotingCommand, RequestCode, ResponseCode, code_name, fastjson

__all__ = ["STANDARD_JSON_VERSION", "NameServerProcessor"]

#: MQVersion.Version.V4_9_4's ordinal: clients from this version on get routes in standard JSON
STANDARD_JSON_VERSION = 401

_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1


class _FieldError(ValueError):
    pass


def _need(cmd: RemotingCommand, name: str) -> str:
    value = cmd.ext(name)
    if value is None:
        raise _FieldError(f"the custom field <{name}> is null")
    return value


def _long(cmd: RemotingCommand, name: str, default: int | None = None, limit: int = _LONG_MAX) -> int:
    value = cmd.ext(name)
    if value is None:
        if default is None:
            raise _FieldError(f"the custom field <{name}> is null")
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise _FieldError(f"the custom field <{name}> is not a number: {value[:40]!r}") from None
    if not -limit - 1 <= number <= limit:
        raise _FieldError(f"the custom field <{name}> is out of range: {number}")
    return number


def _flag(cmd: RemotingCommand, name: str) -> bool:
    return (cmd.ext(name) or "").strip().lower() == "true"


class NameServerProcessor:
    """Holds the route table and the KV config; `process(request, connection)` answers one request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.routes = RouteTable()
        self.kv = KVConfig()
        self._handlers: dict[int, Callable[[RemotingCommand, Hashable | None], RemotingCommand]] = {
            RequestCode.REGISTER_BROKER: self._register_broker,
            RequestCode.UNREGISTER_BROKER: self._unregister_broker,
            RequestCode.BROKER_HEARTBEAT: self._heartbeat,
            RequestCode.QUERY_DATA_VERSION: self._query_data_version,
            RequestCode.GET_ROUTEINFO_BY_TOPIC: self._route,
            RequestCode.GET_BROKER_CLUSTER_INFO: self._cluster_info,
            RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER: self._all_topics,
            RequestCode.GET_TOPICS_BY_CLUSTER: self._topics_by_cluster,
            RequestCode.DELETE_TOPIC_IN_NAMESRV: self._delete_topic,
            RequestCode.PUT_KV_CONFIG: self._put_kv,
            RequestCode.GET_KV_CONFIG: self._get_kv,
            RequestCode.DELETE_KV_CONFIG: self._delete_kv,
            RequestCode.GET_KVLIST_BY_NAMESPACE: self._kv_list,
        }

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def process(self, cmd: RemotingCommand, connection: Hashable | None = None) -> RemotingCommand:
        handler = self._handlers.get(cmd.code)
        if handler is None:
            return cmd.response_to(
                ResponseCode.REQUEST_CODE_NOT_SUPPORTED,
                f"request code {cmd.code} ({code_name(cmd.code)}) is not supported by this name server",
            )
        try:
            return handler(cmd, connection)
        except (_FieldError, BodyError) as exc:
            return cmd.response_to(ResponseCode.SYSTEM_ERROR, str(exc))

    def expire(self) -> list[tuple[str, str]]:
        """Drop brokers silent beyond their timeout (the NameServer's periodic scan)."""
        return self.routes.expire(self.now_ms())

    def connection_closed(self, connection: Hashable) -> list[tuple[str, str]]:
        return self.routes.connection_closed(connection)

    # ---- brokers ----
    def _register_broker(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        crc = _long(cmd, "bodyCrc32", 0, _INT_MAX)
        if crc and cmd.body and crc != zlib.crc32(cmd.body) & 0x7FFFFFFF:
            return cmd.response_to(ResponseCode.SYSTEM_ERROR, "crc32 not match")
        topics, version = decode_register_body(cmd.body, _flag(cmd, "compressed"))
        result = self.routes.register(
            cluster=_need(cmd, "clusterName"),
            addr=_need(cmd, "brokerAddr"),
            name=_need(cmd, "brokerName"),
            broker_id=_long(cmd, "brokerId"),
            now_ms=self.now_ms(),
            topics=topics,
            data_version=version,
            ha_addr=cmd.ext("haServerAddr"),
            timeout_ms=_long(cmd, "heartbeatTimeoutMillis", DEFAULT_BROKER_TIMEOUT_MS),
            connection=connection,
        )
        header = {}
        if result.master_addr:
            header["masterAddr"] = result.master_addr
        if result.ha_addr:
            header["haServerAddr"] = result.ha_addr
        order = self.kv.namespace(NAMESPACE_ORDER_TOPIC_CONFIG)
        body = encode_kv_table(order) if order else b""
        return cmd.response_to(ResponseCode.SUCCESS, ext_fields=header, body=body)

    def _unregister_broker(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        self.routes.unregister(
            _need(cmd, "clusterName"), _need(cmd, "brokerAddr"), _need(cmd, "brokerName"), _long(cmd, "brokerId")
        )
        return cmd.response_to(ResponseCode.SUCCESS)

    def _heartbeat(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        self.routes.heartbeat(_need(cmd, "clusterName"), _need(cmd, "brokerAddr"), self.now_ms())
        return cmd.response_to(ResponseCode.SUCCESS)

    def _query_data_version(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        cluster, addr = _need(cmd, "clusterName"), _need(cmd, "brokerAddr")
        theirs = decode_data_version_json(cmd.body)
        ours = self.routes.data_version(cluster, addr)
        self.routes.heartbeat(cluster, addr, self.now_ms())
        changed = ours is None or ours != theirs
        body = fastjson.dumps(encode_data_version(ours)) if ours is not None else b""
        return cmd.response_to(ResponseCode.SUCCESS, ext_fields={"changed": str(changed).lower()}, body=body)

    # ---- routes and topics ----
    def _route(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        topic = _need(cmd, "topic")
        route = self.routes.route(topic)
        if route is None:
            return cmd.response_to(
                ResponseCode.TOPIC_NOT_EXIST, f"No topic route info in name server for the topic: {topic}"
            )
        standard = cmd.version >= STANDARD_JSON_VERSION or _flag(cmd, "acceptStandardJsonOnly")
        return cmd.response_to(ResponseCode.SUCCESS, body=fastjson.dumps(route, standard=standard))

    def _cluster_info(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        return cmd.response_to(ResponseCode.SUCCESS, body=fastjson.dumps(self.routes.cluster_info()))

    def _all_topics(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        return cmd.response_to(ResponseCode.SUCCESS, body=encode_topic_list(self.routes.topic_names()))

    def _topics_by_cluster(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        topics = self.routes.topics_of_cluster(_need(cmd, "cluster"))
        return cmd.response_to(ResponseCode.SUCCESS, body=encode_topic_list(topics))

    def _delete_topic(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        self.routes.delete_topic(_need(cmd, "topic"), cmd.ext("clusterName"))
        return cmd.response_to(ResponseCode.SUCCESS)

    # ---- KV config ----
    def _put_kv(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        self.kv.put(_need(cmd, "namespace"), _need(cmd, "key"), _need(cmd, "value"))
        return cmd.response_to(ResponseCode.SUCCESS)

    def _get_kv(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        namespace, key = _need(cmd, "namespace"), _need(cmd, "key")
        value = self.kv.get(namespace, key)
        if value is None:
            return cmd.response_to(ResponseCode.QUERY_NOT_FOUND, f"No config item, Namespace: {namespace} Key: {key}")
        return cmd.response_to(ResponseCode.SUCCESS, ext_fields={"value": value})

    def _delete_kv(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        self.kv.delete(_need(cmd, "namespace"), _need(cmd, "key"))
        return cmd.response_to(ResponseCode.SUCCESS)

    def _kv_list(self, cmd: RemotingCommand, connection: Hashable | None) -> RemotingCommand:
        namespace = _need(cmd, "namespace")
        table = self.kv.namespace(namespace)
        if table is None:
            return cmd.response_to(ResponseCode.QUERY_NOT_FOUND, f"No config item, Namespace: {namespace}")
        return cmd.response_to(ResponseCode.SUCCESS, body=encode_kv_table(table))
