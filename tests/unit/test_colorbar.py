"""The explorer's colour bar: compact, with tick labels that tell a narrow similarity range apart."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("ipyleaflet")
pytest.importorskip("branca")

from eoembed.explore.layers import colorbar_control  # noqa: E402

TICK = r'text-anchor="middle" fill="#222">([^<]+)<'


@pytest.mark.parametrize("lo, hi", [(0.0, 0.262), (0.2069, 0.8145), (-3.5, 12.0), (290.1, 291.3), (0.94, 1.0),
                                    (0.995, 1.0), (0.938, 1.0)])
def test_ticks_are_distinct_readable_values_inside_the_range(lo, hi):
    c = colorbar_control(lo, hi, "viridis", "predicted x")
    text = re.findall(TICK, c.widget.value)
    labels = [float(t) for t in text]
    assert len(labels) >= 3 and labels == sorted(set(labels)), (lo, hi, text)  # distinct and increasing
    assert lo - 1e-9 <= labels[0] and labels[-1] <= hi + 1e-9
    assert all(len(t) <= 6 for t in text), text  # short labels, not 0.2069061403
    assert c.caption == "predicted x" and (c.value_min, c.value_max) == (lo, hi)
    # each label is the value where its tick stands (not a rounding of it)
    xs = [float(x) for x in re.findall(r'<text x="([0-9.]+)" y="45"', c.widget.value)]
    at = [lo + (x - 14) / 240 * (hi - lo) for x in xs]
    assert all(abs(v - a) <= 1e-3 * (hi - lo) for v, a in zip(labels, at)), (labels, at)


def test_colorbar_control_draws_its_own_compact_bar():
    import ipyleaflet

    c = colorbar_control(0.94, 1.0, "viridis", "cosine similarity <test>", width=180)
    assert isinstance(c, ipyleaflet.ColormapControl)
    html = c.widget.value
    assert 'width="208"' in html and "cosine similarity &lt;test&gt;" in html  # 180 px bar + margins
    other = colorbar_control(0.0, 1.0, "magma", "b")  # gradient ids are page-wide: each bar its own
    assert re.search(r'linearGradient id="([^"]+)"', html).group(1) != re.search(
        r'linearGradient id="([^"]+)"', other.widget.value).group(1)
