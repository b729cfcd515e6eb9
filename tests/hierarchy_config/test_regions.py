"""GB/T 2260 code table read from stdnum's loc.dat."""

from __future__ import annotations

import pytest

from hierarchy_config import regions
from hierarchy_config.regions import Region, RegionDataError, parse_loc


def codes(items: list[Region]) -> list[str]:
    return [r.code for r in items]


def test_provinces_are_province_level_codes() -> None:
    provinces = regions.provinces()
    assert all(r.code.endswith("0000") for r in provinces)
    by_code = {r.code: r.name for r in provinces}
    assert by_code["330000"] == "浙江省"
    assert by_code["110000"] == "北京市"
    assert codes(provinces) == sorted(codes(provinces))
    assert len(provinces) == 34


def test_hangzhou_is_a_prefecture_of_zhejiang() -> None:
    prefectures = regions.prefectures("330000")
    assert prefectures[0] == Region("330100", "杭州市", None, None)
    assert "330200" in codes(prefectures)
    assert all(r.code.startswith("33") and r.code.endswith("00") for r in prefectures)
    assert "330000" not in codes(prefectures)
    # defunct prefectures (嘉兴地区, until 1983) are left out
    assert "332100" not in codes(prefectures)


def test_groupings_are_not_prefectures() -> None:
    for municipality in ("110000", "120000", "310000", "500000"):
        assert regions.prefectures(municipality) == []
    names = {r.name for p in regions.provinces() for r in regions.prefectures(p.code)}
    assert not names & {"市辖区", "县"}
    assert not any(name.endswith("直辖县级行政单位") for name in names)


def test_counties_by_year() -> None:
    all_time = codes(regions.counties("330100"))
    assert "330103" in all_time  # 下城区, abolished in 2021
    assert "330101" not in all_time  # 市辖区
    assert "330103" in codes(regions.counties("330100", 2000))
    assert "330103" not in codes(regions.counties("330100", 2022))
    assert "330109" not in codes(regions.counties("330100", 2000))  # 萧山区 from 2001
    assert all(not c.endswith("00") for c in all_time)


def test_validity_years() -> None:
    assert regions.is_known_region("330103")
    assert regions.is_known_region("330103", 2000)
    assert regions.is_known_region("330103", 2021)
    assert not regions.is_known_region("330103", 2022)
    assert not regions.is_known_region("330103", 1982)
    assert regions.is_known_region("330100", 2024)
    assert not regions.is_known_region("999999")
    assert not regions.is_known_region("100000")  # the ministry's id is not a division


def test_region_name() -> None:
    assert regions.region_name("330100") == "杭州市"
    assert regions.region_name("330103") == "下城区"
    assert regions.region_name("330000") == "浙江省"
    assert regions.region_name("810000") == "香港特别行政区"
    assert regions.region_name("999999") is None


def test_renamed_code_has_several_periods() -> None:
    # 130502: 桥东区 until 2019, 襄都区 from 2020
    assert regions.region_name("130502") == "襄都区"
    names_2000 = {r.code: r.name for r in regions.counties("130500", 2000)}
    assert names_2000["130502"] == "桥东区"


def test_data_lags_the_standard() -> None:
    # stdnum's table comes from Wikipedia and lacks the 2021 Hangzhou districts.
    assert not regions.is_known_region("330113")


def test_bad_codes_are_refused() -> None:
    with pytest.raises(ValueError, match="province"):
        regions.prefectures("330100")
    with pytest.raises(ValueError, match="prefecture"):
        regions.counties("330103")
    with pytest.raises(ValueError):
        regions.prefectures("33")


def test_parse_loc_format() -> None:
    table = parse_loc(
        [
            "# comment\n",
            '33 province="浙江省"\n',
            '  0100 county="杭州市"\n',
            '  0103 county="[1983-2021]下城区"\n',
            '  0502 county="[-2019]桥东区,[2020-]襄都区"\n',
            '81 province="香港特別行政區"\n',
        ]
    )
    assert table["330000"] == (Region("330000", "浙江省", None, None),)
    assert table["330103"] == (Region("330103", "下城区", 1983, 2021),)
    assert table["330502"] == (
        Region("330502", "桥东区", None, 2019),
        Region("330502", "襄都区", 2020, None),
    )
    assert table["810000"][0].name == "香港特別行政區"


@pytest.mark.parametrize(
    "lines",
    [['  0100 county="杭州市"'], ['33 province="浙江省"', "  01 county=x"], ['33 p="x"']],
)
def test_parse_loc_rejects_garbage(lines: list[str]) -> None:
    with pytest.raises(RegionDataError, match="line"):
        parse_loc(lines)
