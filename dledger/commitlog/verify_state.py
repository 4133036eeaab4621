"""`check_hard_state`: what `dledger log verify` says of a node's hard state beside its log, and what the
node will do with it.

A node's store holds `log/` (the commit log) and `state/` (the LMDB hard state). Read-only, like
`verify.py`. The verdicts, in the order the node meets them at start:
- the record fails its CRC or does not decode, or is missing beside a non-empty log: the node refuses to
  start (one line naming the file and the recovery: replace the store as a new member);
- the saved commit index is past the log's last valid index: the node starts **recovering** (it grants no
  vote, never campaigns, is not counted in an election) until its log again reaches that index;
- otherwise: it starts normally.
Invariant: `ok` is False whenever the node would refuse to start or start recovering.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import lmdb

from dledger.commitlog.errors import HardStateCorruptError
from dledger.commitlog.hardstate import read_hard_state

__all__ = ["StateVerdict", "check_hard_state", "state_dir_beside"]


@dataclass(frozen=True, slots=True)
class StateVerdict:
    """One line for the operator (`line`), and whether the node starts as a normal voter (`ok`)."""

    ok: bool
    line: str


def state_dir_beside(log_dir: str) -> str | None:
    """The hard state directory of the node store that holds `log_dir` (`<store>/log`), if there is one."""
    candidate = os.path.join(os.path.dirname(os.path.abspath(log_dir)), "state")
    return candidate if os.path.isfile(os.path.join(candidate, "data.mdb")) else None


def check_hard_state(state_dir: str, first_index: int, last_index: int) -> StateVerdict:
    """Check the hard state in `state_dir` against a log holding `first_index..last_index` (its valid prefix)."""
    try:
        hs = read_hard_state(state_dir)
    except HardStateCorruptError as exc:
        return StateVerdict(False, f"BAD hard state: {exc}; the node will refuse to start (replace the store)")
    except lmdb.Error as exc:
        return StateVerdict(
            False, f"BAD hard state: {state_dir}: cannot be read ({exc}); the node will refuse to start"
        )
    has_log = last_index > 0 or first_index > 1
    if hs is None:
        if has_log:
            return StateVerdict(
                False,
                f"BAD hard state: {state_dir}: no record beside a log up to index {last_index};"
                " the node will refuse to start (replace the store)",
            )
        return StateVerdict(True, f"hard state: {state_dir}: none yet (a new store); the node starts at term 0")
    what = f"term {hs.current_term}, vote {hs.voted_for or '-'}, commit {hs.commit_index}"
    if hs.commit_index > last_index:
        return StateVerdict(
            False,
            f"RECOVER hard state ({what}): the log's valid entries end at {last_index}, below the saved commit"
            f" index; the node will start recovering (no votes, never campaigns) until its log again reaches"
            f" {hs.commit_index}, fetching entries {last_index + 1}..{hs.commit_index} from the leader",
        )
    return StateVerdict(True, f"hard state ({what}): CRC ok; the log covers the commit index")
