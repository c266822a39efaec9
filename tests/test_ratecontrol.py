"""--kbps: choosing an operating point from a table."""

from __future__ import annotations

import pytest

from imfcodec.errors import InputError
from imfcodec.ratecontrol import OperatingPoint, choose, load_table, save_table, table_path


def _p(bf, bq, steady, psnr, codec="vp9", startup=2500.0):
    return OperatingPoint(base_factor=bf, base_quality=bq, key_quality=16, steady_kbps=steady, startup_bytes=startup,
                          psnr=psnr, psnr_bicubic=psnr - 2, base_codec=codec)


POINTS = [_p(4, 0, 3.0, 26.0), _p(2, 8, 8.0, 28.0), _p(2, 16, 14.0, 29.0), _p(2, 13, 5.0, 27.0, codec="hevc")]


def test_a_short_clip_pays_its_start_up_bytes():
    p = POINTS[1]
    assert p.kbps(10.0) == pytest.approx(8.0 + 2.0)  # 2500 bytes over 10 s
    assert p.kbps(1.0) == pytest.approx(8.0 + 20.0)


def test_the_best_quality_that_fits():
    point, rate, fits = choose(POINTS, 12.0, 10.0)
    assert (point, fits) == (POINTS[1], True) and rate == pytest.approx(10.0)
    assert choose(POINTS, 100.0, 10.0)[0] == POINTS[2]
    assert choose(POINTS, 12.0, 10.0, base_codec="hevc")[0] == POINTS[3]
    assert choose(POINTS, 12.0, None)[0] == POINTS[1]  # an unknown duration: DEFAULT_DURATION_S


def test_nothing_fits_gives_the_lowest_rate_and_says_so():
    point, rate, fits = choose(POINTS, 1.0, 10.0)
    assert point == POINTS[0] and not fits and rate > 1.0


@pytest.mark.parametrize("kw, needle", [(dict(kbps=0.0), "--kbps must be > 0"),
                                        (dict(kbps=10.0, base_codec="av1"), "no av1 base-layer points")])
def test_bad_requests(kw, needle):
    with pytest.raises(InputError, match=needle):
        choose(POINTS, duration_s=10.0, **kw)
    with pytest.raises(InputError, match="empty"):
        choose([], 10.0)


def test_tables_round_trip(tmp_path):
    path = tmp_path / "x-points.json"
    save_table(POINTS, path, {"enhancer": "x"})
    import json

    assert [OperatingPoint(**p) for p in json.loads(path.read_text())["points"]] == POINTS
    with pytest.raises(InputError, match="operating-point table of the enhancer 'no-such'"):
        load_table("no-such")
    assert table_path("enh-wide").name == "enh-wide-points.json"
    if table_path("enh-wide").is_file():
        assert all(p.base_codec in ("vp9", "hevc", "av1") for p in load_table("enh-wide"))
