"""Loopback port choice: below the kernel's ephemeral range, or within LSNET_PORT_RANGE (which the
test suite sets per pytest-xdist worker so that parallel workers never search the same ports)."""

from __future__ import annotations

import itertools
import os
import socket
from types import SimpleNamespace
from typing import ClassVar

import pytest

from node import demo
from node.demo import PORT_RANGE_ENV, ephemeral_low, free_port_range, port_bases_from_env
from node.simulate import PortHold
from tests.conftest import worker_port_range


class _Unbound:
    """Stands in for socket.socket: records the ports "bound" without binding any, so that this
    test does not take, even for a moment, ports of another worker's slice."""

    ports: ClassVar[list[int]] = []

    def __init__(self, *args: object) -> None:
        pass

    def bind(self, address: tuple[str, int]) -> None:
        self.ports.append(address[1])

    def close(self) -> None:
        pass


def test_without_the_variable_ports_lie_below_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PORT_RANGE_ENV, raising=False)
    assert port_bases_from_env(3) is None
    fake = SimpleNamespace(socket=_Unbound, AF_INET=socket.AF_INET, SOCK_STREAM=socket.SOCK_STREAM)
    monkeypatch.setattr(demo, "socket", fake)  # node.demo's sockets only
    _Unbound.ports.clear()
    for _ in range(50):
        base = free_port_range(3)
        assert base >= 10000 and base + 3 <= min(ephemeral_low(), 60000)
    assert len(_Unbound.ports) == 150


def test_the_variable_confines_both_port_pickers(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        assert os.environ.get(PORT_RANGE_ENV)  # tests/conftest.py gave this worker its slice
    else:  # a slice as a second worker would get
        low, high = worker_port_range("gw1", 2, (10000, min(ephemeral_low(), 60000)))
        monkeypatch.setenv(PORT_RANGE_ENV, f"{low}-{high}")
    low, high = (int(p) for p in os.environ[PORT_RANGE_ENV].split("-"))
    assert port_bases_from_env(7) == (low, high - 6)
    for _ in range(20):
        base = free_port_range(7)
        assert low <= base and base + 7 <= high
    hold = PortHold(5)
    try:
        assert low <= hold.base and hold.base + 5 <= high
    finally:
        hold.close()


@pytest.mark.parametrize("spec", ["20000", "x-y", "500-2000", "20000-20002", "30000-20000"])
def test_a_bad_range_is_refused(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setenv(PORT_RANGE_ENV, spec)
    with pytest.raises(ValueError, match=PORT_RANGE_ENV):
        port_bases_from_env(3)


def test_worker_slices_do_not_overlap() -> None:
    whole = (10000, 32768)
    slices = [worker_port_range(f"gw{i}", 3, whole) for i in range(3)]
    assert slices[0][0] == whole[0] and slices[-1][1] <= whole[1]
    for (_, high), (low, _) in itertools.pairwise(slices):
        assert high <= low
