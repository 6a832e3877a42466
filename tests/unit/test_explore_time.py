"""The explorer on a cube with time: time slider, trajectories, two dates side by side."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipyleaflet")
pytest.importorskip("bqplot")
pytest.importorskip("faiss")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _embfixtures import make_emb  # noqa: E402

import eoembed  # noqa: E402
from eoembed.exceptions import DimensionError, ParameterError, QueryError  # noqa: E402

DATES = ["2024-01-15", "2024-02-15", "2024-03-15", "2024-04-15"]


@pytest.fixture(scope="module")
def emb_t():
    return make_emb(16, 18, 8, times=4, block=6, noise=0.6, seed=7)[0]


def _centre(emb, r, c):
    return float(emb.x[c]), float(emb.y[r])


def _cosine_to(v, grid):
    """Cosine similarity of vector ``v`` (d,) to every column of ``grid`` (d, y, x), in numpy."""
    g = np.asarray(grid, np.float64)
    return np.einsum("d,dyx->yx", v, g) / (np.linalg.norm(v) * np.linalg.norm(g, axis=0))


def test_time_slider_redraws_pca_and_similarity_for_the_date(emb_t):
    ex = eoembed.explore.explore(emb_t, scatter=None)
    assert ex.time is None and ex.view.widgets.time_w.options[0] == ("mean", -1)
    assert [lab for lab, _ in ex.view.widgets.time_w.options[1:]] == DATES
    assert ex.layers["PCA-RGB"].name == "PCA-RGB (mean of 4 dates)"
    r, c = 5, 7
    ex.click(*_centre(emb_t, r, c))
    ex.view.widgets.time_w.value = 2  # what moving the slider in the browser does
    assert str(ex.time)[:10] == DATES[2] and ex.last_error is None
    # PCA-RGB of that date with the explorer's projection (Projection.rgb, not the layer's own fast path)
    want = ex.state.grid.proj.rgb(emb_t.isel(time=2)).transpose("band", "y", "x").values
    np.testing.assert_allclose(ex.layer_data["PCA-RGB"].values, want, atol=1e-5)
    # the query re-runs at that date: similarity = numpy cosine of the clicked patch's vector at t=2
    v = emb_t.values[2, :, r, c].astype(np.float64)
    np.testing.assert_allclose(ex.layer_data["similarity"].values, _cosine_to(v, emb_t.values[2]), atol=1e-5)
    # the query vector is the patch at that date (the search still spans every date of the index)
    assert (ex.hits["row"].iloc[0], ex.hits["col"].iloc[0]) == (r, c) and str(ex.hits["time"].iloc[0])[:10] == DATES[2]
    assert f"<td>{DATES[2]}</td>" in ex.view.widgets.hits_w.value  # the panel's hit table says which date each hit is
    # the layers carry the date, on the map and in the panel's layer list
    assert ex.layers["PCA-RGB"].name == f"PCA-RGB {DATES[2]}"
    assert ex.layers["similarity"].name == f"similarity {DATES[2]}"
    assert (f"PCA-RGB {DATES[2]}", "PCA-RGB") in ex.view.widgets.layer_w.options
    # the public method moves the slider; None goes back to the mean view
    ex.set_time("2024-04-15")
    assert ex.view.widgets.time_w.value == 3 and ex.view.widgets.time_w.label == DATES[3]
    ex.set_time(None)
    assert ex.view.widgets.time_w.value == -1 and ex.time is None
    np.testing.assert_allclose(ex.layer_data["similarity"].values, ex.similarity.mean("time").values, atol=1e-6)
    assert ex.layers["PCA-RGB"].name == "PCA-RGB (mean of 4 dates)"


def test_a_slider_move_without_a_query_redraws_only_the_pca_layer(emb_t):
    ex = eoembed.explore.explore(emb_t, scatter=None, time=1)
    assert ex.view.widgets.time_w.value == 1 and ex.layers["PCA-RGB"].name == f"PCA-RGB {DATES[1]}"
    before = ex.layers["PCA-RGB"].url
    ex.view.widgets.time_w.value = 0
    assert ex.layers["PCA-RGB"].url != before and "similarity" not in ex.layers and ex.last_error is None


def test_bad_times_are_typed_errors(emb_t):
    ex = eoembed.explore.explore(emb_t, scatter=None)
    with pytest.raises(ParameterError, match=r"its times are \['2024-01-15'"):
        ex.set_time("2024-05-15")
    with pytest.raises(ParameterError, match="out of range"):
        ex.set_time(4)
    with pytest.raises(ParameterError, match="integer position"):
        ex.set_time(True)
    assert ex.time is None  # a refused date changes nothing
    with pytest.raises(ParameterError, match="does not name one timestep"):
        eoembed.explore.explore(emb_t, scatter=None, time="2030-01-01")
    flat, _ = make_emb(8, 8, 8, seed=1)
    ex0 = eoembed.explore.explore(flat, scatter=None)
    assert ex0.view.widgets.time_w is None  # no slider without time
    with pytest.raises(DimensionError, match="pool_time=False"):
        ex0.set_time(0)
    with pytest.raises(DimensionError, match="pool_time=False"):
        ex0.trajectory_at(*_centre(flat, 2, 2))
    with pytest.raises(DimensionError, match="pool_time=False"):
        eoembed.explore.explore(flat, scatter=None, time=0)


def test_trajectory_plot_is_the_cosine_to_the_first_date(emb_t):
    emb = emb_t.copy(data=emb_t.values.copy())
    r, c = 9, 4
    emb.values[0, :, r, c] = np.nan  # first timestep masked: the first *valid* one is the reference
    ex = eoembed.explore.explore(emb, scatter=None)
    x, y = _centre(emb, r, c)
    df = ex.trajectory_at(x, y)
    v = emb.values[:, :, r, c].astype(np.float64)
    ref = v[1]
    want = np.array([np.nan] + [v[t] @ ref / (np.linalg.norm(v[t]) * np.linalg.norm(ref)) for t in range(1, 4)])
    np.testing.assert_allclose(df["similarity_to_first"].to_numpy(), want, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ex.view.trajectory.line.y, float), want, atol=1e-6)  # what is plotted
    assert [str(t)[:10] for t in np.asarray(ex.view.trajectory.line.x)] == DATES
    axes = {a.label for a in ex.view.trajectory.figure.axes}
    assert axes == {"date", "cosine similarity to first date"}
    assert f"({x:.0f}, {y:.0f}) EPSG:32631" in ex.view.trajectory.figure.title
    assert ex.view.trajectory.box.children == (ex.view.trajectory.figure,) and ex.view.trajectory.box in ex.panel.children
    # pca1 is the first component of the explorer's own PCA (the red of the PCA-RGB layer)
    np.testing.assert_allclose(df["pca1"].to_numpy()[1:], ex.state.grid.proj.func(v[1:].astype(np.float32))[:, 0], atol=1e-5)
    # the timestep shown is marked on the plot
    ex.set_time(2)
    assert list(ex.view.trajectory.now.y) == pytest.approx([want[2]])
    with pytest.raises(QueryError, match="outside"):
        ex.trajectory_at(x + 1e6, y)


def test_a_search_click_shows_the_clicked_places_trajectory(emb_t):
    from pyproj import Transformer

    ex = eoembed.explore.explore(emb_t, scatter=None)
    r, c = 12, 15
    lon, lat = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True).transform(*_centre(emb_t, r, c))
    # exactly the message the browser sends for a click on the map
    ex.map._handle_leaflet_event(None, {"event": "interaction", "type": "click", "coordinates": [lat, lon]}, None)
    assert ex.last_error is None
    assert (ex.trajectory_data.attrs["row"], ex.trajectory_data.attrs["col"]) == (r, c)
    v = emb_t.values[:, :, r, c].astype(np.float64)
    want = [v[t] @ v[0] / (np.linalg.norm(v[t]) * np.linalg.norm(v[0])) for t in range(4)]
    np.testing.assert_allclose(np.asarray(ex.view.trajectory.line.y, float), want, atol=1e-6)


def test_split_dates_labels_each_side_with_its_date(emb_t):
    import ipyleaflet

    ex = eoembed.explore.explore(emb_t, scatter=None)
    a, b = ex.split_dates(0, "2024-03-15")
    assert (a, b) == (f"PCA-RGB {DATES[0]}", f"PCA-RGB {DATES[2]}")
    assert ex.view.split.left_layer is ex.layers[a] and ex.view.split.right_layer is ex.layers[b]
    for name, t in ((a, 0), (b, 2)):
        want = ex.state.grid.proj.rgb(emb_t.isel(time=t)).transpose("band", "y", "x").values
        np.testing.assert_allclose(ex.layer_data[name].values, want, atol=1e-5)
    labels = [ctl for ctl in ex.map.controls if isinstance(ctl, ipyleaflet.WidgetControl)]
    text = {ctl.position: ctl.widget.value for ctl in labels}
    assert DATES[0] in text["bottomleft"] and DATES[2] in text["bottomright"]
    # the live layer beside a date: its label follows the slider
    ex.split("PCA-RGB", a)
    ex.set_time(3)
    text = {ctl.position: ctl.widget.value for ctl in ex.view.split_labels}
    assert DATES[3] in text["bottomleft"] and DATES[0] in text["bottomright"]
    ex.unsplit()
    assert not any(isinstance(ctl, (ipyleaflet.WidgetControl, ipyleaflet.SplitMapControl)) for ctl in ex.map.controls)
    with pytest.raises(ParameterError, match="same timestep"):
        ex.split_dates(1, "2024-02-15")
    with pytest.raises(ParameterError, match="out of range"):
        ex.split_dates(0, 9)


def test_session_restores_the_date_shown_and_the_split_dates(emb_t, tmp_path):
    ex = eoembed.explore.explore(emb_t, scatter=None)
    ex.click(*_centre(emb_t, 3, 3))
    ex.set_time("2024-02-15")
    ex.split_dates(0, 3)
    path = ex.save_session(tmp_path / "s.json")
    ex2 = eoembed.explore.explore(emb_t, scatter=None, session=path)
    assert ex2.time == ex.time and ex2.view.widgets.time_w.value == 1
    assert list(ex2.hits["id"]) == list(ex.hits["id"])
    assert ex2.state.split_names == (f"PCA-RGB {DATES[0]}", f"PCA-RGB {DATES[3]}")


def test_clusters_follow_the_date_shown_or_the_mean_view(emb_t):
    ex = eoembed.explore.explore(emb_t, scatter=None)
    cm = ex.show_clusters(k=3)  # mean view: the patches' mean vectors, as the map shows them
    np.testing.assert_array_equal(cm.values, eoembed.cluster(emb_t.mean("time", keep_attrs=True), k=3).values)
    assert ex.layers["clusters"].name == "clusters (mean of 4 dates)"
    ex.set_time(1)
    cm = ex.show_clusters(k=3)
    np.testing.assert_array_equal(cm.values, eoembed.cluster(emb_t, k=3, time=1).values)
    assert cm.dims == ("y", "x") and ex.layers["clusters"].name == f"clusters {DATES[1]}"
