"""Process helpers and the run state file that `cleanup` reads.

Invariants: a pid is signalled only if `/proc/<pid>/cmdline` still names one of our programs (`dledger ...
node`, `dledger ... broker` or `jepsen_like`), so a reused pid is never killed; every process, namespace and
link a run creates is recorded in its state file before (or right when) it exists.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
from typing import Any

__all__ = ["STATE_DIR", "RunState", "kill_pid_if_ours", "owner_alive", "pid_is_ours"]

STATE_DIR = pathlib.Path(os.environ.get("JEPSEN_LIKE_STATE", "/tmp/jepsen_like/state"))


def pid_is_ours(pid: int) -> bool:
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"jepsen_like" in cmdline or (b"dledger" in cmdline and (b" node " in cmdline or b" broker " in cmdline))


def owner_alive(data: dict[str, Any]) -> bool:
    """Whether the controller that wrote a state file still runs (then its resources are in use)."""
    owner = data.get("owner")
    if not isinstance(owner, int) or owner == os.getpid():
        return False
    try:
        cmdline = pathlib.Path(f"/proc/{owner}/cmdline").read_bytes()
    except OSError:
        return False
    return b"jepsen_like" in cmdline or b"pytest" in cmdline


def kill_pid_if_ours(pid: int) -> bool:
    if not pid_is_ours(pid):
        return False
    try:
        os.kill(pid, signal.SIGCONT)  # a paused process cannot die of SIGKILL before it is reaped otherwise
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


class RunState:
    """What a run created (`netns`, `links`, `pids`), persisted as JSON under `STATE_DIR/<tag>.json`."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.path = STATE_DIR / f"{tag}.json"
        self.data: dict[str, Any] = {"netns": [], "links": [], "pids": [], "owner": os.getpid()}

    def add(self, key: str, value: Any) -> None:
        self.data[key].append(value)
        self.save()

    def remove_pid(self, pid: int) -> None:
        if pid in self.data["pids"]:
            self.data["pids"].remove(pid)
            self.save()

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
