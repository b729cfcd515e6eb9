"""The node program: resource database, record ingest, HTTP server, CLI and the composition root
that builds a whole node from its configuration."""
