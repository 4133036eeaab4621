"""The `dledger` command line: every sub-command (node, cluster, status, append, get, member, compact, log,
demo, broker, bench), one module per family; `main` is the entry point.

Invariant: nothing else in dledger imports this package.
"""
