"""Macro-decision statistics (DESIGN.md §7): indicators of the standards release computed from
the resource database, locally or federated down the tree.

* `periods` — period strings (month/quarter/year) and ranges; pure.
* `request` — what is asked (`StatsRequest`) and the errors; pure.
* `query` — an indicator as one SQLAlchemy Core SELECT ... GROUP BY (SQLite and PostgreSQL).
* `cells` — partial aggregates, their combination (sums, counts, HLL sketches for distinct
  counts across nodes), minimum cell size, ratios, and the result document; pure but for
  `datasketches`.
* `regions` — roll-up along the release's GB/T 2260 table (municipalities, county-level units
  administered by a province); pure.
* `family` / `disclosure` — the answers that must hide consistently, and primary + secondary
  (complementary) suppression over their lattice; pure.
* `compute` — runs the query on the node's database (`compute_part`, `run_local`).
* `federated` — the signed query that travels down the tree and the answers that come back.
* `service` — the node-facing use cases (`StatsService`): local and federated runs.
* `replication` — which release decides indicators and replication modes here (`local` types
  are kept out of the upward change log by `node.store`).
* `metrics` — `lsnet_stats_*` Prometheus metrics.
* `http` / `cli` — `GET /v1/stats/...`, `POST /v1/stats/query`, `lsnet stats ...`.

Not here: replication itself (the `local` mode is enforced when records are written,
`node.store`), the dashboard page (it reads the JSON of `GET /v1/stats/run/...`).
"""
