"""Per-account access control of the remoting face, as RocketMQ 4.x's plain ACL (`plain_acl.yml`) decides it.

`AclTable.load(path)` reads the accounts file: RocketMQ's plain_acl layout written as JSON (JSON is YAML, so
RocketMQ reads the same file):

    {"accounts": [{"accessKey": "app", "secretKey": "app-secret-1", "admin": false,
                   "defaultTopicPerm": "DENY", "defaultGroupPerm": "SUB",
                   "topicPerms": ["orders=PUB|SUB", "audit=SUB"], "groupPerms": ["billing=SUB"]}]}

`AclTable.authorize(cmd)` returns None when the request may proceed, else one line saying why (the broker
answers SYSTEM_ERROR with it, as RocketMQ's broker answers the AclException its ACL hook throws):

- every request carries `AccessKey` and the ACL 1.0 `Signature` with that account's secret (see `acl.py`);
- administration (create / delete topics and subscription groups, offset resets, broker config updates)
  needs `admin: true`;
- the topics and groups a request names need the permission its kind asks for: a send PUB on its topic; a
  pull, an offset query or update SUB on its topic and on its group; a heartbeat SUB on each group and
  topic it subscribes; a send-back, unregister or group member lookup SUB on its group. A resource listed in
  `topicPerms` / `groupPerms` has that permission (DENY, PUB, SUB or PUB|SUB), any other the account's
  default, or every permission for an admin account.

Invariants: `load` raises `ConfigError` (one line naming the file) for anything but a well-formed table and
never another exception; `authorize` never raises, whatever the request holds. Comparisons of secrets are
constant-time (`acl.check`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dledger.node.config import ConfigError
from dledger.rocketmq.remoting import acl, fastjson
from dledger.rocketmq.remoting.codes import RequestCode
from dledger.rocketmq.remoting.command import RemotingCommand

__all__ = ["Account", "AclTable", "Perm"]

MAX_FILE_BYTES = 4 << 20
RETRY_PREFIX = "%RETRY%"


class Perm(enum.IntFlag):
    """RocketMQ's permission bits: DENY wins over anything; ANY is asked by nothing here."""

    DENY = 1
    ANY = 2
    PUB = 4
    SUB = 8

    @classmethod
    def parse(cls, text: str) -> Perm:
        value = {"DENY": cls.DENY, "PUB": cls.PUB, "SUB": cls.SUB, "PUB|SUB": cls.PUB | cls.SUB,
                 "SUB|PUB": cls.PUB | cls.SUB}.get(text.strip().upper())  # fmt: skip
        if value is None:
            raise ValueError(f"permission {text.strip()[:20]!r} is not DENY, PUB, SUB or PUB|SUB")
        return value


def allows(owned: Perm, needed: Perm) -> bool:
    if owned & Perm.DENY:
        return False
    return bool(needed & owned)


@dataclass(frozen=True, slots=True)
class Account:
    access_key: str
    secret_key: str
    admin: bool = False
    default_topic_perm: Perm = Perm.DENY
    default_group_perm: Perm = Perm.DENY
    perms: Mapping[str, Perm] = field(default_factory=dict)  # topic, or %RETRY%<group> for a group

    def refusal(self, resource: str, needed: Perm) -> str | None:
        is_group = resource.startswith(RETRY_PREFIX)
        if resource in self.perms:
            owned = self.perms[resource]
        elif self.admin:
            return None
        else:
            owned = self.default_group_perm if is_group else self.default_topic_perm
        if allows(owned, needed):
            return None
        kind, name = ("group", resource[len(RETRY_PREFIX) :]) if is_group else ("topic", resource)
        return f"no {needed.name} permission on {kind} {name} for accessKey={self.access_key}"


ADMIN_CODES = frozenset({
    RequestCode.UPDATE_AND_CREATE_TOPIC, RequestCode.DELETE_TOPIC_IN_BROKER,
    RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, RequestCode.DELETE_SUBSCRIPTIONGROUP,
    RequestCode.UPDATE_BROKER_CONFIG, RequestCode.INVOKE_BROKER_TO_RESET_OFFSET,
})  # fmt: skip


def _resources(cmd: RemotingCommand) -> Iterator[tuple[str, Perm]]:
    """What the request touches, as RocketMQ's plain ACL reads it from the header (and a heartbeat's body)."""
    f = cmd.ext_fields
    code = cmd.code
    if code == RequestCode.SEND_MESSAGE or code == RequestCode.SEND_BATCH_MESSAGE:
        yield f.get("topic", f.get("b", "")), Perm.PUB
    elif code == RequestCode.SEND_MESSAGE_V2:
        yield f.get("b", ""), Perm.PUB
    elif code == RequestCode.CONSUMER_SEND_MSG_BACK:
        yield RETRY_PREFIX + f.get("group", ""), Perm.SUB
    elif code in (RequestCode.PULL_MESSAGE, RequestCode.QUERY_CONSUMER_OFFSET, RequestCode.UPDATE_CONSUMER_OFFSET):
        yield f.get("topic", ""), Perm.SUB
        yield RETRY_PREFIX + f.get("consumerGroup", ""), Perm.SUB
    elif code == RequestCode.QUERY_MESSAGE:
        yield f.get("topic", ""), Perm.SUB
    elif code in (RequestCode.UNREGISTER_CLIENT, RequestCode.GET_CONSUMER_LIST_BY_GROUP):
        yield RETRY_PREFIX + f.get("consumerGroup", ""), Perm.SUB
    elif code == RequestCode.HEART_BEAT:
        yield from _heartbeat_resources(cmd.body)


def _heartbeat_resources(body: bytes) -> Iterator[tuple[str, Perm]]:
    try:
        data = fastjson.loads(body) if body else {}
    except ValueError:
        return  # the heartbeat handler answers a malformed body
    consumers = data.get("consumerDataSet") if isinstance(data, dict) else None
    for consumer in consumers if isinstance(consumers, list) else []:
        if not isinstance(consumer, dict):
            continue
        yield RETRY_PREFIX + str(consumer.get("groupName", "")), Perm.SUB
        subs = consumer.get("subscriptionDataSet")
        for sub in subs if isinstance(subs, list) else []:
            topic = sub.get("topic") if isinstance(sub, dict) else None
            if isinstance(topic, str) and not topic.startswith(RETRY_PREFIX):
                yield topic, Perm.SUB


@dataclass(frozen=True, slots=True)
class AclTable:
    accounts: Mapping[str, Account]

    def authorize(self, cmd: RemotingCommand) -> str | None:
        given = cmd.ext_fields.get("AccessKey", "")
        if not given:
            return "the request is not signed (no AccessKey)"
        account = self.accounts.get(given)
        if account is None:
            return f"no ACL account for accessKey={given[:64]}"
        problem = acl.check(cmd.ext_fields, cmd.body, account.access_key, account.secret_key)
        if problem is not None:
            return f"{problem} (accessKey={account.access_key})"
        if cmd.code in ADMIN_CODES and not account.admin:
            return f"request code {cmd.code} needs an admin account, accessKey={account.access_key} is not"
        for resource, needed in _resources(cmd):
            why = account.refusal(resource, needed)
            if why is not None:
                return why
        return None

    @classmethod
    def single(cls, access_key: str, secret_key: str) -> AclTable:
        """One admin account that may do everything (the `accessKey` / `secretKey` settings)."""
        return cls({access_key: Account(access_key, secret_key, admin=True)})

    def merged(self, other: AclTable) -> AclTable:
        return AclTable({**self.accounts, **other.accounts})

    @classmethod
    def load(cls, path: str | Path) -> AclTable:
        where = f"aclFile {str(path)[:200]}"
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(f"{where}: larger than {MAX_FILE_BYTES} bytes")
        try:
            return cls.parse(json.loads(raw))
        except (ValueError, TypeError) as exc:  # json's errors are ValueErrors
            raise ConfigError(f"{where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    @classmethod
    def parse(cls, data: Any) -> AclTable:
        if not isinstance(data, dict) or not isinstance(data.get("accounts"), list):
            raise ValueError("not an object with an 'accounts' list (RocketMQ's plain_acl layout, as JSON)")
        accounts: dict[str, Account] = {}
        for i, item in enumerate(data["accounts"]):
            if not isinstance(item, dict):
                raise ValueError(f"account {i} is not an object")
            account = _account(i, item)
            if account.access_key in accounts:
                raise ValueError(f"accessKey {account.access_key!r} appears twice")
            accounts[account.access_key] = account
        return cls(accounts)


def _account(i: int, item: Mapping[str, Any]) -> Account:
    def text(key: str, default: str | None = None) -> str:
        value = item.get(key, default)
        if not isinstance(value, str) or (default is None and not value.strip()):
            raise ValueError(f"account {i}: {key} is missing or not text")
        return value.strip()

    access_key, secret_key = text("accessKey"), text("secretKey")
    if len(secret_key) < 6:  # RocketMQ refuses shorter keys too
        raise ValueError(f"account {access_key[:64]}: secretKey is shorter than 6 characters")
    admin = item.get("admin", False)
    if not isinstance(admin, bool):
        raise ValueError(f"account {access_key[:64]}: admin is not true or false")
    perms: dict[str, Perm] = {}
    for key, prefix in (("topicPerms", ""), ("groupPerms", RETRY_PREFIX)):
        entries = item.get(key) or []
        if not isinstance(entries, list):
            raise ValueError(f"account {access_key[:64]}: {key} is not a list")
        for entry in entries:
            name, sep, perm = str(entry).rpartition("=")
            if not sep or not name.strip():
                raise ValueError(f"account {access_key[:64]}: {key} entry {str(entry)[:60]!r} is not NAME=PERM")
            perms[prefix + name.strip()] = Perm.parse(perm)
    return Account(
        access_key, secret_key, admin,
        Perm.parse(text("defaultTopicPerm", "DENY")), Perm.parse(text("defaultGroupPerm", "DENY")), perms,
    )  # fmt: skip
