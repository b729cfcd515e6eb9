"""Cost of RFC 9421 request authentication per node-to-node request, as a ratio to the bare
Ed25519 sign + verify of the same bytes measured in the same run.

    python bench/http_signatures.py [--requests 2000]

Prints microseconds per request for: bare Ed25519 (sign + verify, pynacl), RFC 9421 sign,
RFC 9421 verify (header parsing, digest, signature), and the ratio. A push carries up to
`limits.max_batches_per_transfer` batches of up to 1,000 changes, so the per-record share is the
per-request cost divided by several thousand.
"""

from __future__ import annotations

import argparse
import time

from security.http_signatures import Signer, sign_request, verify_request
from security.keyring import KeyRing
from security.keys import NodeKey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    n = max(100, min(args.requests, 100_000))
    key = NodeKey.generate()
    ring = KeyRing.from_keys({"330100": key.verify_key})
    body = b"\x00" * 64 * 1024  # a typical transfer is tens to hundreds of KiB
    url = "http://127.0.0.1:18400/v1/sync/push"

    started = time.perf_counter()
    for _ in range(n):
        sig = key.sign(body)
        key.verify_key.verify(body, sig)
    bare = (time.perf_counter() - started) / n

    started = time.perf_counter()
    signed = []
    for i in range(n):
        signed.append(sign_request(Signer("330100", key), "330000", "POST", url, body, 1000.0 + i))
    sign_cost = (time.perf_counter() - started) / n

    started = time.perf_counter()
    for i, headers in enumerate(signed):
        verify_request(
            "POST",
            url,
            headers.items(),
            body,
            me="330000",
            keys=ring,
            now_s=1000.0 + i,
            max_skew_s=300,
        )
    verify_cost = (time.perf_counter() - started) / n

    total = sign_cost + verify_cost
    print(f"requests: {n}, body {len(body)} bytes")
    print(f"bare Ed25519 sign+verify: {bare * 1e6:8.1f} us")
    print(f"RFC 9421 sign:            {sign_cost * 1e6:8.1f} us")
    print(f"RFC 9421 verify:          {verify_cost * 1e6:8.1f} us")
    print(f"ratio (RFC 9421 / bare):  {total / bare:8.2f}")
    print(f"per record in a transfer of 8,000 changes: {total / 8000 * 1e6:.2f} us")


if __name__ == "__main__":
    main()
