"""Combining partial aggregates: exact sums, estimated distinct counts and duplicates from
sketches, withheld and suppressed small cells. Pure."""

from __future__ import annotations

from node.stats.cells import Cell, Partial, combine, new_sketch, suppress_small, withhold_small


def ids(first: int, last: int) -> list[str]:
    return [f"P{i:06d}" for i in range(first, last)]


def test_sums_and_counts_add_exactly() -> None:
    a = Partial("sum", 2, {("330100",): Cell(3, 1001), ("330200",): Cell(1, 5)})
    b = Partial("sum", 2, {("330100",): Cell(2, -1)})
    merged = combine([a, b])
    assert merged.cells[("330100",)] == Cell(5, 1000)
    assert merged.cells[("330200",)] == Cell(1, 5)
    assert not any(c.estimated for c in merged.cells.values())


def test_distinct_counts_merge_by_sketch_and_are_marked_estimates() -> None:
    a = Partial("distinct", 0, {(): Cell(3000, 3000, 3000, new_sketch(ids(0, 3000)))})
    b = Partial("distinct", 0, {(): Cell(2000, 2000, 2000, new_sketch(ids(2500, 4500)))})
    cell = combine([a, b]).cells[()]
    assert cell.estimated
    assert abs(cell.value - 4500) <= 4500 * 0.03  # not 5000: the 500 shared persons count once


def test_duplicates_are_the_overlap_of_the_parts() -> None:
    a = Partial("duplicates", 0, {(): Cell(0, 0, 300, new_sketch(ids(0, 300)))})
    b = Partial("duplicates", 0, {(): Cell(0, 0, 200, new_sketch(ids(290, 490)))})
    cell = combine([a, b]).cells[()]
    assert cell.estimated and abs(cell.value - 10) <= 2


def test_small_cells_are_withheld_then_suppressed() -> None:
    part = Partial(
        "distinct", 0, {("a",): Cell(3, 3, 3, new_sketch(ids(0, 3))), ("b",): Cell(9, 9)}
    )
    held = withhold_small(part, 5)
    assert held.cells[("a",)] == Cell(0, 0, 0, None, False, 1)  # the sketch goes too
    assert held.cells[("b",)] == Cell(9, 9)
    shown = suppress_small(held.cells, 5)
    assert shown[("a",)].suppressed and not shown[("b",)].suppressed
    assert suppress_small({("c",): Cell(4, 400)}, 5)[("c",)].suppressed


def test_wire_form_round_trips() -> None:
    cell = Cell(4, 7, 2, b"sk", True, 1)
    assert Cell.from_wire(cell.to_wire(("330100", "2025-01")), 2) == (("330100", "2025-01"), cell)
