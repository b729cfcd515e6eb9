"""Network management: heartbeats, the whole-tree view, lag, alerts and the dashboard.

Empty in the foundation: today each node exposes its own replication state through `/metrics`,
`/v1/status` and `lsnet status` (see `node.app.Node.status_dict`). The network-management issue
fills this package; it does not own replication itself (see `sync`).
"""
