"""Lookups and administration through remoting (what mqadmin and the Dashboard use most).

`HANDLERS` maps each request code this module answers to its handler; the broker merges it into its table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.context import BrokerContext

__all__ = ["HANDLERS"]

HANDLERS: dict[int, Callable[[BrokerContext, RemotingCommand, object], Awaitable[RemotingCommand]]] = {}
