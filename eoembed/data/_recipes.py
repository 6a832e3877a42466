"""Per-sensor recipes, as data: what to fetch from STAC for each sensor and how to read it.

A :class:`SensorRecipe` says which collection to search, which asset carries each band,
which asset masks clouds and by what rule, and the value scale. The loaders in
:mod:`eoembed.data.stac` share one path (:func:`resolve_assets` → stack → :func:`valid_mask`)
and differ only by their recipe plus one value step each (S2 harmonization, S1 dB).
Band tables come from :mod:`eoembed.sensors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import xarray as xr

from eoembed import sensors
from eoembed.data._composite import qa_pixel_valid, scl_valid
from eoembed.exceptions import DataSourceError, ParameterError


@dataclass(frozen=True)
class SensorRecipe:
    """How one sensor's cube is fetched.

    Attributes
    ----------
    sensor: name recorded in ``attrs["eoembed:sensor"]``. collection: default STAC collection id.
    name: output DataArray name. label, band_word: for messages. bands: default band order. known: valid band names
    (lower-cased first when ``lowercase``). band_assets: candidate asset keys per band, first
    present wins (a band missing here uses its own name). missing: ``"nan"`` keeps an absent
    band as an all-NaN layer, ``"drop"`` leaves it out (an explicit ``bands=`` list then raises).
    mask_assets: candidate asset keys of the quality layer. mask_rule: ``(layer, values) -> valid``.
    common_names, wavelengths: band coordinates. attrs: value-scale attrs stamped on the cube.
    """

    sensor: str
    collection: str
    name: str
    bands: tuple[str, ...]
    known: tuple[str, ...]
    label: str
    band_word: str = "band"
    band_assets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    missing: str = "nan"
    lowercase: bool = False
    mask_assets: tuple[str, ...] = ()
    mask_rule: Callable[[xr.DataArray, tuple[int, ...]], xr.DataArray] | None = None
    mask_missing_hint: str = ""
    common_names: Mapping[str, str] = field(default_factory=dict)
    wavelengths: Mapping[str, float] | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def check_bands(self, bands: Sequence[str] | None) -> list[str]:
        """The requested band names, validated (ParameterError naming the valid ones)."""
        names = [str(b).lower() if self.lowercase else str(b) for b in (self.bands if bands is None else bands)]
        unknown = [b for b in names if b not in self.known]
        if unknown or not names:
            raise ParameterError(
                f"Unknown {self.label} {self.band_word}(s) {unknown or names}. Expected names from {list(self.known)}."
            )
        return names


SENTINEL2 = SensorRecipe(
    sensor="sentinel2", collection="sentinel-2-l2a", name="reflectance", label="Sentinel-2",
    bands=sensors.S2_BANDS, known=tuple(sorted(sensors.S2_COMMON_NAMES)),
    mask_assets=("SCL",), mask_rule=scl_valid,
    mask_missing_hint=("The items have no 'SCL' asset, so clouds cannot be masked. Pass mask_classes=None to "
                       "skip SCL masking, or use a Sentinel-2 L2A collection."),
    common_names=sensors.S2_COMMON_NAMES, wavelengths=sensors.S2_WAVELENGTHS,
    attrs={"eoembed:scale": 10000},
)  # fmt: skip

SENTINEL1 = SensorRecipe(
    sensor="sentinel1", collection="sentinel-1-rtc", name="backscatter", label="Sentinel-1", band_word="polarisation",
    bands=sensors.S1_BANDS, known=("vv", "vh", "hh", "hv"), lowercase=True,
)  # fmt: skip

LANDSAT = SensorRecipe(
    sensor="landsat", collection="landsat-c2-l2", name="reflectance", label="Landsat",
    bands=sensors.LANDSAT_BANDS, known=sensors.LANDSAT_BANDS, band_assets=sensors.LANDSAT_ASSETS, missing="drop",
    mask_assets=("qa_pixel", "QA_PIXEL"), mask_rule=qa_pixel_valid,
    mask_missing_hint="The items have no 'qa_pixel' asset; pass mask_bits=None to skip cloud masking.",
    common_names=sensors.LANDSAT_COMMON_NAMES, wavelengths=sensors.LANDSAT_WAVELENGTHS,
    attrs={"eoembed:scale_factor": 2.75e-05, "eoembed:add_offset": -0.2},
)  # fmt: skip


def resolve_assets(recipe: SensorRecipe, items: Iterable, wanted: Sequence[str], *, explicit: bool,
                   masked: bool, collection: str) -> tuple[list[str], dict[str, str], str | None]:
    """``(band names to return, band → asset key, mask asset key)`` for the items found.

    Raises DataSourceError when an explicitly requested band (``missing="drop"``), every band,
    or the mask layer (when masking) is absent from all items.
    """
    keys_present = {k for it in items for k in it.assets}
    band_asset: dict[str, str] = {}
    for b in wanted:
        key = next((k for k in recipe.band_assets.get(b, (b,)) if k in keys_present), None)
        if key is not None:
            band_asset[b] = key
    if recipe.missing == "drop":
        if explicit and len(band_asset) < len(wanted):
            absent = [b for b in wanted if b not in band_asset]
            raise DataSourceError(
                f"The {recipe.label} items have no asset for band(s) {absent} (Level-2 has no B8, B9 or B11). "
                f"Available: {sorted(band_asset)}."
            )
        band_names = [b for b in wanted if b in band_asset]
        if not band_names:
            raise DataSourceError(
                f"The items carry none of the {recipe.label} bands {list(wanted)}; is {collection!r} right?"
            )
    else:  # absent bands become all-NaN layers
        band_names = list(wanted)
    mask_key = next((k for k in recipe.mask_assets if k in keys_present), None) if masked else None
    if masked and mask_key is None:
        raise DataSourceError(recipe.mask_missing_hint)
    return band_names, band_asset, mask_key


def select_bands(recipe: SensorRecipe, raw: xr.DataArray, band_names: Sequence[str], band_asset: Mapping[str, str],
                 mask_key: str | None, mask_values: tuple[int, ...]) -> xr.DataArray:
    """The stacked assets → masked data with canonical band names (absent bands NaN)."""
    have = [b for b in band_names if band_asset.get(b) in raw["band"].values]
    data = raw.sel(band=[band_asset[b] for b in have])
    if mask_key is not None:
        data = data.where(recipe.mask_rule(raw.sel(band=mask_key, drop=True), mask_values))
    data = data.assign_coords(band=have)
    if len(have) < len(band_names):
        data = data.reindex(band=list(band_names))  # absent bands -> NaN, keeps the contract
    return data
