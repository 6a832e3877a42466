"""From a map to objects you can count: threshold → connected regions → polygons.

A similarity map (``emb.eo.similarity(...)``), a class probability or a change distance is
thresholded; touching patches above it form one object (8-connected by default, as a
person would outline a field); each object becomes a polygon in the map's CRS with its
patch count, area and mean/max score. ``len(result)`` is the count; the GeoDataFrame
writes to GeoParquet/GeoJSON/GeoPackage with geopandas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from eoembed.analysis._common import provenance
from eoembed.exceptions import DimensionError, EmptyDataError, MissingCRSError, ParameterError

__all__ = ["to_objects"]


def to_objects(score: xr.DataArray, threshold: float | None = None, *, above: bool = True, min_patches: int = 1,
               connectivity: int = 8) -> Any:
    """Threshold a ``(y, x)`` map and vectorise the connected regions to polygons.

    Parameters
    ----------
    score:
        A ``(y, x)`` map with a CRS (similarity, probability, distance) or a boolean mask.
        NaN patches never belong to an object.
    threshold:
        Patches with ``score > threshold`` (``above=True``) or ``score < threshold`` form
        the objects. Required unless ``score`` is boolean.
    min_patches:
        Objects smaller than this many patches are dropped (noise), and counted in
        ``attrs["dropped"]`` of the result.
    connectivity:
        8 (diagonal neighbours join, default) or 4.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per object, largest first: ``object`` (1..n), ``n_patches``, ``area_m2``,
        ``area_ha`` (projected CRS in metres), ``score_mean``, ``score_max``, ``geometry``
        (the union of its patches) in the map's CRS. ``attrs`` holds the threshold, the
        rule and the map's provenance (model, weights, licence).

    Raises
    ------
    DimensionError
        ``score`` is not a ``(y, x)`` map.
    MissingCRSError
        ``score`` has no CRS (objects must be georeferenced).
    ParameterError
        Missing/invalid ``threshold``, ``min_patches`` or ``connectivity``.
    EmptyDataError
        The map has no valid patch.
    """
    import geopandas as gpd
    import pandas as pd
    import rasterio.features
    from scipy import ndimage

    if not isinstance(score, xr.DataArray) or set(score.dims) != {"y", "x"}:
        dims = getattr(score, "dims", type(score).__name__)
        raise DimensionError(f"to_objects needs a (y, x) map (similarity, probability, distance or a mask), got "
                             f"dims {dims}. Select one band/time first, e.g. score.isel(time=0).")
    if score.rio.crs is None:
        raise MissingCRSError("to_objects needs a map with a CRS to make georeferenced polygons; write one with "
                              "score.rio.write_crs(...) (maps made by eoembed carry the cube's CRS).")
    if connectivity not in (4, 8):
        raise ParameterError(f"connectivity must be 4 or 8, got {connectivity!r}.")
    if isinstance(min_patches, (bool, np.bool_)) or not isinstance(min_patches, (int, np.integer)) or min_patches < 1:
        raise ParameterError(f"min_patches must be an integer ≥ 1, got {min_patches!r}.")
    score = score.transpose("y", "x")
    v = np.asarray(score.values)
    if v.dtype == bool:
        mask, vals, rule = v, v.astype(np.float64), "mask"
    else:
        if threshold is None or isinstance(threshold, (bool, np.bool_)) or not np.isfinite(float(threshold)):
            raise ParameterError(f"threshold must be a finite number for a score map, got {threshold!r} "
                                 "(e.g. 0.8 for cosine similarity, or a ChangeResult's .threshold).")
        vals = v.astype(np.float64)
        if not np.isfinite(vals).any():
            raise EmptyDataError("The map has no valid (finite) patch; nothing to threshold.")
        with np.errstate(invalid="ignore"):
            mask = np.isfinite(vals) & ((vals > threshold) if above else (vals < threshold))
        rule = f"score {'>' if above else '<'} {float(threshold):g}"
    structure = np.ones((3, 3), bool) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    labels, n = ndimage.label(mask, structure=structure)
    transform = score.rio.transform()
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = np.flatnonzero(sizes >= min_patches)
    keep = keep[keep > 0]
    rows = []
    if len(keep):
        import shapely.geometry
        from shapely.ops import unary_union

        kept = np.where(np.isin(labels, keep), labels, 0).astype(np.int32)
        # rasterio traces 4-connected polygons; an 8-connected object may come back in parts: union them by label
        parts: dict[int, list] = {}
        for geom, value in rasterio.features.shapes(kept, mask=kept > 0, connectivity=connectivity,
                                                    transform=transform):
            parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
        lab_flat = labels.ravel()
        val_flat = vals.ravel()
        for lab in keep:
            sel = lab_flat == lab
            rows.append({"n_patches": int(sizes[lab]), "score_mean": float(np.nanmean(val_flat[sel])),
                         "score_max": float(np.nanmax(val_flat[sel])), "geometry": unary_union(parts[int(lab)])})
    df = pd.DataFrame(rows, columns=["n_patches", "score_mean", "score_max", "geometry"])
    gdf = gpd.GeoDataFrame(df, geometry="geometry", crs=score.rio.crs)
    gdf = gdf.sort_values("n_patches", ascending=False, kind="stable").reset_index(drop=True)
    gdf.insert(0, "object", np.arange(1, len(gdf) + 1))
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    metres = bool(score.rio.crs.is_projected) and (score.rio.crs.linear_units or "").lower() in ("metre", "meter", "m")
    gdf.insert(2, "area_m2", gdf["n_patches"] * pixel_area if metres else np.nan)
    gdf.insert(3, "area_ha", gdf["area_m2"] / 1e4)
    gdf.attrs = {**provenance(score), "threshold": None if threshold is None else float(threshold), "rule": rule,
                 "connectivity": connectivity, "min_patches": int(min_patches),
                 "dropped": int(((sizes[1:] > 0) & (sizes[1:] < min_patches)).sum())}
    return gdf
