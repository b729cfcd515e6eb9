"""Upward replication: signed, immutable, hash-chained batches from a node's change log to its
parent, relayed unchanged to the ministry. `wire` holds the bytes, `verify` the trust decisions,
`store` the database use cases, `sender` the per-parent queue and `receiver` the HTTP handler."""
