"""Layer 6 — supervision of the logical daemons (planned: issue 11).

Collectors, the poll machinery and keepalive shards beat a heartbeat; stale ones are restarted.

Logger: ``vastkeep.supervision``.
"""
