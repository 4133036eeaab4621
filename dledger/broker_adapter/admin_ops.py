"""The admin operations as JSON-shaped requests and answers, over a `MessageStore` (what the admin RPC serves).

A request is a JSON object `{"op": NAME, ...arguments}`; the answer `{"ok": true, "result": ...}` or
`{"ok": false, "code": CODE, "error": ONE_LINE}`. A topic's type is NORMAL, FIFO, DELAY, TRANSACTION or MIXED, its
perm rw, r, w or none; a group's start is first, last or timestamp (with start_ms), its backoff is
backoff_initial_ms, backoff_max_ms and backoff_multiplier. Operations:

| op | arguments | result |
| --- | --- | --- |
| `topic.list` | | topics |
| `topic.describe` | topic | the topic with its queues' offsets |
| `topic.create` / `topic.update` | topic, queues, type, perm | the topic |
| `topic.delete` | topic | |
| `group.list` | | groups |
| `group.describe` | group | the group and its progress |
| `group.create` / `group.update` | group, max_attempts, backoff_*, fifo, start, start_ms | the group |
| `group.delete` | group | |
| `progress` | group, topic (optional) | one row per queue |

Invariants: every argument is checked for its JSON type and range before anything is proposed (a wrong one is
`BAD_REQUEST` naming it); `WRITES` lists the operations that change state (they need the master and the admin
right), every other one is a read. Reads are answered by the master too (so a read sees every write acknowledged
before it), unless the request says `"any_replica": true`: then by this replica from its applied state, which
may lag behind the master's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dledger.broker_adapter.admin_model import GroupConfig, StartFrom, parse_perm, perm_name
from dledger.broker_adapter.message import MessageType
from dledger.broker_adapter.results import PutStatus, StoreError, TopicConfig
from dledger.broker_adapter.store import MessageStore

__all__ = ["OPS", "WRITES", "AdminError", "run_op"]

WRITES = frozenset({"topic.create", "topic.update", "topic.delete", "group.create", "group.update", "group.delete"})
_TYPES = {t.name: t for t in MessageType}
_STARTS = {s.name.lower(): s for s in StartFrom}


class AdminError(Exception):
    """A refused request: `code` (BAD_REQUEST, NOT_FOUND, NOT_MASTER, ...) and a one-line reason."""

    def __init__(self, code: str, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


def _arg(req: Mapping[str, Any], name: str, kind: type, default: Any = None, *, required: bool = False) -> Any:
    if name not in req or req[name] is None:
        if required:
            raise AdminError("BAD_REQUEST", f"{name!r} is required")
        return default
    value = req[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise AdminError("BAD_REQUEST", f"{name!r} must be an integer")
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise AdminError("BAD_REQUEST", f"{name!r} must be a number")
    if kind in (str, bool) and not isinstance(value, kind):
        raise AdminError("BAD_REQUEST", f"{name!r} must be a {kind.__name__}")
    return value


def topic_dict(cfg: TopicConfig) -> dict[str, Any]:
    return {"topic": cfg.name, "queues": cfg.queue_count, "type": cfg.message_type.name, "perm": perm_name(cfg.perm)}


async def _topic_put(store: MessageStore, req: Mapping[str, Any], create: bool) -> Any:
    kind_text = _arg(req, "type", str)
    if kind_text is not None and kind_text.upper() not in _TYPES:
        raise AdminError("BAD_REQUEST", f"type {kind_text!r} is not one of {', '.join(_TYPES)}")
    perm_text = _arg(req, "perm", str)
    try:
        perm = parse_perm(perm_text) if perm_text is not None else None
    except ValueError as exc:
        raise AdminError("BAD_REQUEST", str(exc)) from None
    cfg = await store.put_topic(
        _arg(req, "topic", str, required=True),
        create=create,
        queue_count=_arg(req, "queues", int),
        message_type=_TYPES[kind_text.upper()] if kind_text is not None else None,
        perm=perm,
    )
    return topic_dict(cfg)


def _describe_topic(store: MessageStore, req: Mapping[str, Any]) -> Any:
    name = _arg(req, "topic", str, required=True)
    cfg = store.topic(name)
    if cfg is None:
        raise AdminError("NOT_FOUND", f"topic {name!r} does not exist")
    queues = [
        {"queue": q, "min_offset": store.min_offset(name, q), "max_offset": store.max_offset(name, q)}
        for q in range(cfg.queue_count)
    ]
    return {**topic_dict(cfg), "queue_offsets": queues}


async def _group_put(store: MessageStore, req: Mapping[str, Any], create: bool) -> Any:
    name = _arg(req, "group", str, required=True)
    base = store.group_config(name) if not create else None
    base = base or GroupConfig(name, max_attempts=store.options.max_delivery_attempts)
    start_text = _arg(req, "start", str)
    if start_text is not None and start_text.lower() not in _STARTS:
        raise AdminError("BAD_REQUEST", f"start {start_text!r} is not first, last or timestamp")
    multiplier = _arg(req, "backoff_multiplier", float)
    start_ms = _arg(req, "start_ms", int, base.start_ms)
    start = _STARTS[start_text.lower()] if start_text is not None else base.start
    if start == StartFrom.TIMESTAMP and "start_ms" not in req and base.start != StartFrom.TIMESTAMP:
        raise AdminError("BAD_REQUEST", "start 'timestamp' needs 'start_ms' (epoch milliseconds)")
    cfg = GroupConfig(
        name,
        max_attempts=_arg(req, "max_attempts", int, base.max_attempts),
        backoff_initial_ms=_arg(req, "backoff_initial_ms", int, base.backoff_initial_ms),
        backoff_max_ms=_arg(req, "backoff_max_ms", int, base.backoff_max_ms),
        backoff_multiplier_milli=round(multiplier * 1000) if multiplier is not None else base.backoff_multiplier_milli,
        fifo=_arg(req, "fifo", bool, base.fifo),
        start=start,
        start_ms=start_ms,
    )
    return group_dict(await store.put_group(cfg, create=create))


def group_dict(cfg: GroupConfig) -> dict[str, Any]:
    out = cfg.as_dict()
    out["group"] = out.pop("name")
    out["backoff_multiplier"] = out.pop("backoff_multiplier_milli") / 1000
    out["start"] = cfg.start.name.lower()
    return out


def _describe_group(store: MessageStore, req: Mapping[str, Any]) -> Any:
    name = _arg(req, "group", str, required=True)
    cfg = store.group_config(name)
    rows = store.progress(name)
    if cfg is None and not rows:
        raise AdminError("NOT_FOUND", f"group {name!r} has no settings and no progress")
    settings = group_dict(cfg) if cfg is not None else {"group": name, "configured": False}
    return {**settings, "progress": [r.as_dict() for r in rows]}


async def _delete_topic(store: MessageStore, req: Mapping[str, Any]) -> Any:
    await store.delete_topic(_arg(req, "topic", str, required=True))
    return None


async def _delete_group(store: MessageStore, req: Mapping[str, Any]) -> Any:
    await store.delete_group(_arg(req, "group", str, required=True))
    return None


def _progress(store: MessageStore, req: Mapping[str, Any]) -> Any:
    group, topic = _arg(req, "group", str, required=True), _arg(req, "topic", str)
    if topic is not None and store.topic(topic) is None:
        raise AdminError("NOT_FOUND", f"topic {topic!r} does not exist")
    return [r.as_dict() for r in store.progress(group, topic)]


async def _sync(value: Any) -> Any:
    return value


Op = Callable[[MessageStore, Mapping[str, Any]], Awaitable[Any]]
OPS: dict[str, Op] = {
    "topic.list": lambda st, req: _sync([topic_dict(t) for t in sorted(st.topics(), key=lambda t: t.name)]),
    "topic.describe": lambda st, req: _sync(_describe_topic(st, req)),
    "topic.create": lambda st, req: _topic_put(st, req, True),
    "topic.update": lambda st, req: _topic_put(st, req, False),
    "topic.delete": _delete_topic,
    "group.list": lambda st, req: _sync([group_dict(g) for g in st.group_configs()]),
    "group.describe": lambda st, req: _sync(_describe_group(st, req)),
    "group.create": lambda st, req: _group_put(st, req, True),
    "group.update": lambda st, req: _group_put(st, req, False),
    "group.delete": _delete_group,
    "progress": lambda st, req: _sync(_progress(st, req)),
}

_CODES = {
    PutStatus.NOT_LEADER: "NOT_MASTER",
    PutStatus.SERVICE_NOT_AVAILABLE: "NOT_MASTER",
    PutStatus.TOPIC_NOT_FOUND: "NOT_FOUND",
    PutStatus.NOT_FOUND: "NOT_FOUND",
    PutStatus.MESSAGE_ILLEGAL: "BAD_REQUEST",
    PutStatus.FLUSH_OR_REPLICA_TIMEOUT: "TIMEOUT",
}


async def run_op(store: MessageStore, req: Any) -> dict[str, Any]:
    """Run one request; the answer object (never raises for a bad request or a refused write)."""
    try:
        if not isinstance(req, dict):
            raise AdminError("BAD_REQUEST", "the request must be a JSON object")
        name = req.get("op")
        op = OPS.get(name) if isinstance(name, str) else None
        if op is None:
            raise AdminError("BAD_REQUEST", f"unknown op {req.get('op')!r} (one of {', '.join(OPS)})")
        if (req["op"] in WRITES or req.get("any_replica") is not True) and not store.is_master:
            raise AdminError("NOT_MASTER", "this replica is not the master")
        return {"ok": True, "result": await op(store, req)}
    except AdminError as exc:
        return {"ok": False, "code": exc.code, "error": exc.why}
    except StoreError as exc:
        return {"ok": False, "code": _CODES.get(exc.status, exc.status.value), "error": exc.reason}
