"""Labels → patches: sample points, polygons or a label raster on an embedding cube's patch grid.

Points and polygons are located with the one patch locator, :func:`eoembed.cube.locate_patches`
(a polygon labels every patch whose centre it contains, or the patch under it when it is
smaller than a patch); a label raster is read at each patch centre.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from eoembed.cube import canonical, cube_info, locate_patches, raster_on_patches
from eoembed.exceptions import LabelError

__all__ = ["sample_labels"]


# ---------------------------------------------------------------------------------
# labels → patches
# ---------------------------------------------------------------------------------
def _geo_labels(emb: xr.DataArray, gdf, class_column: str):
    import shapely

    if class_column not in gdf.columns:
        raise LabelError(
            f"The labels have no column {class_column!r}; columns are {list(gdf.columns)}. "
            "Pass class_column='<your column>'."
        )
    if gdf.crs is None:
        raise LabelError(
            "The label GeoDataFrame has no CRS; set it with labels.set_crs('EPSG:4326') "
            "(or the CRS your coordinates are in)."
        )
    import pandas as pd

    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    loc = locate_patches(emb, gdf)  # in the labels' CRS; off-grid rows kept (sample_labels counts them)
    lab = np.asarray(gdf[class_column].values, dtype=object)[loc.origin]
    # None, NaN, pd.NA (nullable string/Int columns), NaT: no class
    keep = np.array([not (np.ndim(v) == 0 and pd.isna(v)) for v in lab], bool)
    return loc.row[keep], loc.col[keep], lab[keep], loc.origin[keep]


def _raster_labels(emb: xr.DataArray, raster: xr.DataArray, nodata: Any):
    r, c, v = raster_on_patches(emb, raster, resampling="nearest", nodata=nodata, what="label")
    if np.issubdtype(v.dtype, np.floating) and len(v) and np.all(v == np.round(v)):
        v = v.astype(np.int64)
    return r, c, v.astype(object), np.arange(len(r))


def sample_labels(
    emb: xr.DataArray,
    labels: Any,
    *,
    class_column: str = "class",
    nodata: Any = None,
):
    """Locate labels on the patch grid of ``emb``.

    Parameters
    ----------
    emb:
        Embedding cube (CRS required).
    labels:
        A GeoDataFrame of points and/or polygons with a ``class_column`` in any CRS
        (reprojected; a polygon labels every patch whose centre it contains, or the
        patch under it if it contains none), or a label raster DataArray ``(y, x)`` on
        any grid/CRS (nearest pixel at each patch centre; ``nodata``/NaN excluded).
    class_column, nodata:
        Class column of a GeoDataFrame; nodata value of a raster (default its
        ``rio.nodata``).

    Returns
    -------
    pandas.DataFrame
        One row per labelled patch: ``row``, ``col``, ``x``, ``y`` (patch centre),
        ``label``, ``origin`` (row number of the label feature). Patches outside the
        cube are dropped with a warning; duplicate (patch, class) pairs are merged and
        patches given conflicting classes are dropped with a warning.

    Raises
    ------
    LabelError
        No labels, or none inside the cube.
    """
    import pandas as pd

    emb = canonical(emb)
    info = cube_info(emb)
    if isinstance(labels, xr.DataArray):
        r, c, lab, origin = _raster_labels(emb, labels, nodata)
        what = "label raster"
    else:
        if not hasattr(labels, "geometry"):
            raise LabelError(
                f"labels must be a GeoDataFrame (points/polygons with a {class_column!r} column) or "
                f"a label raster DataArray, got {type(labels).__name__}."
            )
        if len(labels) == 0:
            raise LabelError("The label GeoDataFrame is empty; draw or load at least two classes of examples.")
        r, c, lab, origin = _geo_labels(emb, labels, class_column)
        what = "labels"
    ny, nx = info.shape
    inside = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
    n_out = int((~inside).sum())
    if len(r) and not inside.any():
        x0, y0, x1, y1 = (float(v) for v in emb.rio.bounds())
        raise LabelError(
            f"None of the {len(r)} {what} fall inside the embedding cube (bounds {x0:.0f}, {y0:.0f}, "
            f"{x1:.0f}, {y1:.0f} in {emb.rio.crs}). Check the labels' CRS, or embed the area they cover."
        )
    if n_out:
        warnings.warn(f"{n_out} labelled location(s) fall outside the embedding cube and were dropped.",
                      stacklevel=3)
    r, c, lab, origin = r[inside], c[inside], lab[inside], origin[inside]
    if len(r) == 0:
        raise LabelError(f"The {what} hold no usable label (empty, all nodata or all NaN classes).")
    df = pd.DataFrame({"row": r.astype(np.int64), "col": c.astype(np.int64), "label": lab, "origin": origin})
    df = df.drop_duplicates(subset=["row", "col", "label"])
    dup = df.duplicated(subset=["row", "col"], keep=False)
    if dup.any():
        warnings.warn(
            f"{int(dup.sum())} label(s) on {df[dup].groupby(['row', 'col']).ngroups} patch(es) disagree "
            "about the class; those patches were dropped.", stacklevel=3)
        df = df[~dup]
    df["x"] = emb["x"].values[df["col"].to_numpy()]
    df["y"] = emb["y"].values[df["row"].to_numpy()]
    return df.reset_index(drop=True)[["row", "col", "x", "y", "label", "origin"]]


