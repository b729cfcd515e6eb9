"""TLS contexts for a node's server and its client requests, from `[tls]` in node.toml.

The server context serves the operator's certificate and, with `require_client_cert`, demands a
client certificate signed by `ca_file` (mutual TLS). The client context verifies the peer against
`ca_file` (or the system store) and presents the node's certificate for mutual TLS. Returns None
when TLS is not configured (plain HTTP, e.g. behind a TLS-terminating proxy). No I/O beyond
reading the certificate files.
"""

from __future__ import annotations

import ssl

from hierarchy_config.model import NodeConfig


class TlsError(Exception):
    """A certificate or key file cannot be used; the message names it."""


def server_context(config: NodeConfig) -> ssl.SSLContext | None:
    tls = config.tls
    if tls.cert_file is None or tls.key_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.ca_file is not None:
            ctx.load_verify_locations(tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"[tls] certificate files cannot be used: {exc}") from None
    if tls.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(config: NodeConfig) -> ssl.SSLContext | None:
    tls = config.tls
    if tls.ca_file is None and tls.cert_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if tls.ca_file is not None:
            ctx.load_verify_locations(tls.ca_file)
        if tls.cert_file is not None and tls.key_file is not None:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"[tls] certificate files cannot be used: {exc}") from None
    return ctx
