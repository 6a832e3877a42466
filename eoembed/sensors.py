"""What eoembed knows about sensors: band tables, names, wavelengths, S2 harmonization.

The bottom layer: every other module (``data``, ``bands``, ``models``) takes its band
tables and the Sentinel-2 offset rule from here, so they cannot disagree. Imports
only numpy and pandas.

Band names follow the providers (Sentinel-2 ``B01``…``B12``/``B8A``, Landsat 8/9
OLI/TIRS ``B1``…``B11``, Sentinel-1 ``vv``/``vh``); common names are those of the STAC
EO extension (https://github.com/stac-extensions/eo#common-band-names), with the
three red-edge bands told apart as ``rededge1``/``rededge2``/``rededge3`` (the asset
keys Earth Search and stackstac users see).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "S2", "S1", "LANDSAT",
    "S2_ALL_BANDS", "S2_BANDS", "S2_COMMON_NAMES", "S2_WAVELENGTHS",
    "S1_BANDS",
    "LANDSAT_BANDS", "LANDSAT_ASSETS", "LANDSAT_COMMON_NAMES", "LANDSAT_WAVELENGTHS",
    "COMMON_NAME_ALIASES", "canonical_band",
    "HARMONIZATION_DATE", "HARMONIZATION_OFFSET",
    "parse_baseline", "s2_offset",
]  # fmt: skip

#: Modality keys (the model specs' ``modalities`` and OlmoEarth's input names).
S2 = "sentinel2_l2a"
S1 = "sentinel1"
LANDSAT = "landsat"

# ---- Sentinel-2 MSI ----------------------------------------------------------------
#: All 13 MSI bands (B10 is recognised so that L2A models can ignore it).
S2_ALL_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
#: The 12 L2A reflectance bands in the order OlmoEarth consumes them (and
#: ``eoembed.data.sentinel2`` returns them).
S2_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09")
S2_COMMON_NAMES: dict[str, str] = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red",
    "B05": "rededge1", "B06": "rededge2", "B07": "rededge3", "B08": "nir",
    "B8A": "nir08", "B09": "nir09", "B10": "cirrus", "B11": "swir16", "B12": "swir22",
}  # fmt: skip
#: Central wavelengths in micrometres (Sentinel-2A MSI spectral response, ESA).
S2_WAVELENGTHS: dict[str, float] = {
    "B01": 0.443, "B02": 0.490, "B03": 0.560, "B04": 0.665, "B05": 0.705, "B06": 0.740,
    "B07": 0.783, "B08": 0.842, "B8A": 0.865, "B09": 0.945, "B10": 1.375, "B11": 1.610, "B12": 2.190,
}  # fmt: skip

# ---- Sentinel-1 C-SAR ----------------------------------------------------------------
S1_BANDS: tuple[str, ...] = ("vv", "vh")

# ---- Landsat 8/9 OLI/TIRS --------------------------------------------------------------
#: Band numbers in the order OlmoEarth consumes them.
LANDSAT_BANDS: tuple[str, ...] = ("B8", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11")
#: STAC asset keys / common names of Collection 2 items that carry each band. Level-2
#: has no B8 (pan), B9 (cirrus) or B11; they are used when a catalogue provides them.
LANDSAT_ASSETS: dict[str, tuple[str, ...]] = {
    "B1": ("coastal", "B1", "SR_B1"),
    "B2": ("blue", "B2", "SR_B2"),
    "B3": ("green", "B3", "SR_B3"),
    "B4": ("red", "B4", "SR_B4"),
    "B5": ("nir08", "B5", "SR_B5"),
    "B6": ("swir16", "B6", "SR_B6"),
    "B7": ("swir22", "B7", "SR_B7"),
    "B8": ("pan", "B8"),
    "B9": ("cirrus", "B9"),
    "B10": ("lwir11", "B10", "ST_B10"),
    "B11": ("lwir12", "B11"),
}
LANDSAT_COMMON_NAMES: dict[str, str] = {
    "B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir08", "B6": "swir16",
    "B7": "swir22", "B8": "pan", "B9": "cirrus", "B10": "lwir11", "B11": "lwir12",
}  # fmt: skip
#: Central wavelengths in micrometres (Landsat 8 OLI/TIRS, USGS).
LANDSAT_WAVELENGTHS: dict[str, float] = {
    "B1": 0.443, "B2": 0.482, "B3": 0.562, "B4": 0.655, "B5": 0.865, "B6": 1.609,
    "B7": 2.201, "B8": 0.590, "B9": 1.373, "B10": 10.895, "B11": 12.005,
}  # fmt: skip

#: Other names seen for Sentinel-2 bands: EO v1.1's single ``rededge`` (read as the
#: first red-edge band; a cube labelling all three ``rededge`` is refused as ambiguous).
COMMON_NAME_ALIASES: dict[str, str] = {"rededge": "B05"}

# ---- recognising band labels ----------------------------------------------------------
_S2_FROM_COMMON = {**{c: b for b, c in S2_COMMON_NAMES.items()}, **COMMON_NAME_ALIASES}
_S2_RE = re.compile(r"^(?:s2[-_]?(?:l2a)?[-_]?)?b0?(\d{1,2}a?)$", re.IGNORECASE)
_S1_RE = re.compile(r"^(?:s1[-_]?(?:sigma0|rtc|grd)?[-_]?|sigma0[-_]?)?(vv|vh|hh|hv)$", re.IGNORECASE)
_LANDSAT_RE = re.compile(r"^(?:landsat|lc0?[89]|l[89])[:_-]?b(\d{1,2})$", re.IGNORECASE)


def canonical_band(label: object) -> tuple[str, str] | None:
    """Map one band label to ``(modality, canonical band name)``, or None if unknown.

    Recognises Sentinel-2 names (``B02``, ``B2``, ``b8a``, ``S2-L2A-B02``), STAC common
    names (``blue``, ``rededge1``, ``nir08``, …), Sentinel-1 polarisations (``vv``,
    ``VH``, ``S1-SIGMA0-VV``) and Landsat bands written with a prefix (``landsat:B4``).

    Examples
    --------
    >>> canonical_band("S2-L2A-B8A"), canonical_band("swir16"), canonical_band("VH")
    (('sentinel2_l2a', 'B8A'), ('sentinel2_l2a', 'B11'), ('sentinel1', 'vh'))
    """
    text = str(label).strip()
    low = text.lower()
    if low in _S2_FROM_COMMON:
        return S2, _S2_FROM_COMMON[low]
    m = _LANDSAT_RE.match(text)
    if m:
        return LANDSAT, f"B{int(m.group(1))}"
    m = _S2_RE.match(text)
    if m:
        num = m.group(1).upper()
        name = "B8A" if num == "8A" else f"B{int(num):02d}" if num.isdigit() else None
        if name in S2_ALL_BANDS:
            return S2, name
    m = _S1_RE.match(text)
    if m:
        return S1, m.group(1).lower()
    return None


# ---- Sentinel-2 harmonization -----------------------------------------------------
#: Processing baseline 04.00 (acquisitions from 2022-01-25) adds +1000 to every L2A
#: (and L1C) DN: ``reflectance = (DN + BOA_ADD_OFFSET) / 10000`` with ``BOA_ADD_OFFSET = -1000``.
HARMONIZATION_DATE = np.datetime64("2022-01-25")
HARMONIZATION_OFFSET = 1000.0

#: Item properties that carry the processing baseline, by provider: Planetary Computer
#: and Earth Search ``s2:processing_baseline``, Copernicus Data Space ``processing:version``,
#: the first Earth Search ``sentinel:processing_baseline``.
BASELINE_PROPERTIES = ("s2:processing_baseline", "processing:version", "sentinel:processing_baseline")
#: Earth Search: True when the provider already removed the offset from the COGs.
APPLIED_PROPERTY = "earthsearch:boa_offset_applied"

_BASELINE_RE = re.compile(r"^N?(\d{1,2})[._]?(\d{2})$", re.IGNORECASE)


def parse_baseline(value: object) -> float | None:
    """Processing baseline as a number (``"05.10"``, ``"N0510"``, ``"04_00"``, ``5.1`` → 5.1).

    Returns None when the value says nothing (None, NaN, ``""``, unparseable).
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    text = str(value).strip()
    m = _BASELINE_RE.match(text)
    if m:
        return int(m.group(1)) + int(m.group(2)) / 100
    try:
        return float(text)
    except ValueError:
        return None


def _truthy(value: object) -> bool | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    return True if text in ("true", "1", "yes") else False if text in ("false", "0", "no") else None


def _raster_offset(assets: Mapping[str, Any] | None, bands: Sequence[str]) -> tuple[float, float, str] | None:
    """``(offset, scale, asset key)`` from the first reflectance asset with ``raster:bands``."""
    for key, asset in (assets or {}).items():
        # Earth Search keys assets by common name ("red", "rededge1", …), others by band
        name = key if key in S2_COMMON_NAMES else next((b for b, c in S2_COMMON_NAMES.items() if c == key), None)
        if name not in bands:
            continue
        rb = (asset or {}).get("raster:bands") or []
        if rb and isinstance(rb[0], Mapping) and rb[0].get("offset") is not None:
            return float(rb[0]["offset"]), float(rb[0].get("scale") or 1.0), key
    return None


def s2_offset(
    properties: Mapping[str, Any],
    assets: Mapping[str, Any] | None = None,
    *,
    time: Any = None,
    bands: Sequence[str] = S2_BANDS,
) -> tuple[float, str]:
    """The DN offset a Sentinel-2 L2A scene still carries, and why — the one rule.

    In order, the first that says something decides:

    1. ``earthsearch:boa_offset_applied: true`` (Earth Search): the provider already
       removed it → 0. (``false`` only says "not removed"; the baseline decides.)
    2. ``raster:bands`` ``offset``/``scale`` of a reflectance asset (Earth Search
       Collection 1, Copernicus Data Space): ``-offset / scale`` DN (``-0.1 / 1e-4`` →
       1000; offset 0 → 0). Skipped when the applied flag is present: Earth Search's
       older items carry ``offset: -0.1`` whatever was applied.
    3. the processing baseline (``s2:processing_baseline``, ``processing:version``):
       ≥ 04.00 → 1000.
    4. the acquisition date (``time`` or ``properties["datetime"]``): from 2022-01-25 → 1000.

    Returns ``(offset_dn, reason)``; ``reason`` is a short sentence for the attrs.
    With nothing to go on the offset is 0 and the reason says so.
    """
    applied = _truthy(properties.get(APPLIED_PROPERTY))
    if applied:
        return 0.0, f"{APPLIED_PROPERTY}=true: offset already removed by the provider"
    if applied is None:
        ro = _raster_offset(assets, bands)
        if ro is not None:
            off, scale, key = ro
            dn = float(round(-off / scale)) if scale else 0.0
            return dn, f"raster:bands of {key!r}: offset {off:g}, scale {scale:g} -> {dn:g} DN"
    for prop in BASELINE_PROPERTIES:
        b = parse_baseline(properties.get(prop))
        if b is not None:
            dn = HARMONIZATION_OFFSET if b >= 4.0 else 0.0
            return dn, f"{prop}={properties.get(prop)} -> {dn:g} DN"
    t = time if time is not None else properties.get("datetime")
    if t is not None and not (isinstance(t, float) and np.isnan(t)):
        day = np.datetime64(pd.Timestamp(t).tz_localize(None) if pd.Timestamp(t).tzinfo else pd.Timestamp(t), "D")
        dn = HARMONIZATION_OFFSET if day >= HARMONIZATION_DATE else 0.0
        return dn, f"acquired {day} ({'on/after' if dn else 'before'} 2022-01-25) -> {dn:g} DN"
    return 0.0, "no baseline, flag or date: offset not known, none removed"
