"""The explorer's colour bar: compact, with tick labels that tell a narrow similarity range apart."""

from __future__ import annotations

import pytest

from eoembed.explore.layers import colorbar_ticks


@pytest.mark.parametrize("vmin, vmax, want", [(0.94, 1.0, ["0.940", "0.970", "1.000"]),
                                              (0.0, 1.0, ["0.00", "0.50", "1.00"]),
                                              (0.995, 1.0, ["0.9950", "0.9975", "1.0000"]),
                                              (-20.0, 40.0, ["-20.0", "10.0", "40.0"])])
def test_ticks_differ_on_narrow_and_wide_ranges(vmin, vmax, want):
    assert colorbar_ticks(vmin, vmax) == want


def test_colorbar_control_draws_its_own_compact_bar():
    ipyleaflet = pytest.importorskip("ipyleaflet")
    pytest.importorskip("branca")
    from eoembed.explore.layers import colorbar_control

    c = colorbar_control(0.94, 1.0, "viridis", "cosine similarity <test>", width=180)
    assert isinstance(c, ipyleaflet.ColormapControl) and c.caption == "cosine similarity <test>"
    assert (c.value_min, c.value_max) == (0.94, 1.0)
    html = c.widget.value
    assert "width='180'" in html and "cosine similarity &lt;test&gt;" in html
    assert all(t in html for t in ("0.940", "0.970", "1.000")) and ">1.0<" not in html
