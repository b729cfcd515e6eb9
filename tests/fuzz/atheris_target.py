"""atheris (libFuzzer) target for the decoders and verifiers in `tests.fuzz.targets`.

Run: `python -m tests.fuzz.atheris_target -runs=200000` (any libFuzzer flags; a corpus folder
may follow). The test suite runs it for a short bounded time on every CI run
(`tests/fuzz/test_atheris.py`); longer runs are for the nightly job or a curious operator.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from tests.fuzz.targets import check


def one_input(data: bytes) -> None:
    check(data)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
