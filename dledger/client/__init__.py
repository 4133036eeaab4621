"""The client library: sync and asyncio clients of a dledger group, the retry policy, the streaming
appender and the client errors.

Invariant: it depends on the wire schema (`dledger._proto`) only, never on the node runtime.
"""
