"""Fault injection on real node processes, with a history checker. Built by the jepsen_like issue."""
