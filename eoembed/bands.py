"""Band names, reflectance scale, Sentinel-2 harmonization and validity.

Everything here maps the *cube's* conventions onto the *model's*: which cube band
feeds which model band (by name, never by position), what the numbers mean (DN or
0–1 reflectance), whether the +1000 offset of Sentinel-2 processing baseline 04.00
must be removed, and which pixels hold data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

import eoembed.sensors as sensors
from eoembed.exceptions import BandMismatchError, MissingTimeError, ScaleError, user_stacklevel

if TYPE_CHECKING:  # annotations only: bands sits below the models layer
    from eoembed.models.registry import ModelSpec

# Sensor knowledge (band tables, label recognition, the S2 offset rule) is owned by
# eoembed.sensors; canonical_band is imported here for callers of eoembed.bands.
from eoembed.sensors import LANDSAT, S1, S2, canonical_band  # noqa: F401


@dataclass
class BandPlan:
    """How cube bands feed the model, modality by modality.

    ``sources[modality][i]`` is the cube band index for the model's i-th band of that
    modality, or -1 when the cube lacks it (filled the model's way, see
    :func:`eoembed.models.olmoearth.OlmoEarthEncoder.normalize`).
    """

    modalities: dict[str, tuple[str, ...]]
    sources: dict[str, list[int]]
    cube_labels: list[str]
    ignored: list[str] = field(default_factory=list)

    @property
    def missing(self) -> dict[str, list[str]]:
        return {
            m: [b for b, s in zip(self.modalities[m], self.sources[m]) if s < 0]
            for m in self.modalities
        }

    @property
    def used_bands(self) -> list[str]:
        """Model band names that come from the cube, ``modality:band`` for non-S2."""
        out = []
        for m, names in self.modalities.items():
            for b, s in zip(names, self.sources[m]):
                if s >= 0:
                    out.append(b if m == S2 else f"{m}:{b}")
        return out


def resolve_bands(
    cube: xr.DataArray,
    spec: ModelSpec,
    *,
    bands: dict[str, str] | None = None,
    modalities: tuple[str, ...] | str = "auto",
    extra_bands: str = "raise",
    max_missing: int | None = None,
) -> BandPlan:
    """Match the cube's ``band`` labels to the model's band order.

    Parameters
    ----------
    cube:
        DataArray with a ``band`` dimension. Labels are read from the ``band`` index;
        where a label is not recognised, a ``common_name`` coordinate (stackstac) is
        tried.
    spec:
        The model.
    bands:
        Optional mapping ``{cube label: model band}`` that overrides recognition,
        e.g. ``{"b_blue": "B02", "SAR_VV": "vv"}``.
    modalities:
        ``"auto"``: the model's required modalities plus any other supported modality
        whose bands are all in the cube. Or an explicit tuple.
    extra_bands:
        ``"raise"`` (default) refuses labels that are not bands of the model;
        ``"ignore"`` drops them.
    max_missing:
        Most Sentinel-2 bands that may be absent (default: a third of them). The
        10 m bands B02, B03, B04 and B08 are never optional.

    Raises
    ------
    BandMismatchError
        Duplicate, unknown or too many missing bands, with the fix.
    """
    if "band" not in cube.dims:
        raise BandMismatchError(
            f"the cube has no 'band' dimension (dims: {cube.dims}). Stack bands with "
            "`ds.to_dataarray('band')` or rename the band dimension to 'band'."
        )
    labels = [str(v) for v in cube["band"].values]
    common = (
        [str(v) for v in np.atleast_1d(cube["common_name"].values)]
        if "common_name" in cube.coords and cube["common_name"].ndim <= 1
        else [None] * len(labels)
    )
    if len(common) != len(labels):
        common = [None] * len(labels)
    mapping = {str(k): v for k, v in (bands or {}).items()}
    found: dict[tuple[str, str], int] = {}
    unknown: list[str] = []
    ignored: list[str] = []
    for i, (label, cname) in enumerate(zip(labels, common)):
        if label in mapping:
            target = canonical_band(mapping[label])
            if target is None:
                raise BandMismatchError(
                    f"bands={{{label!r}: {mapping[label]!r}}}: {mapping[label]!r} is not a band "
                    f"eoembed knows. Use Sentinel-2 names (B02…B12, B8A) or vv/vh."
                )
        else:
            target = canonical_band(label) or (canonical_band(cname) if cname else None)
        if target is None:
            unknown.append(label)
            continue
        if target[0] not in spec.modalities or target[1] not in spec.modalities[target[0]]:
            ignored.append(label)  # a real band this model does not read (e.g. B10)
            continue
        if target in found:
            raise BandMismatchError(
                f"bands {labels[found[target]]!r} and {label!r} both map to {target[1]} "
                f"({target[0]}). Keep one, e.g. `cube.drop_sel(band={label!r})`."
            )
        found[target] = i
    if unknown and extra_bands == "raise":
        raise BandMismatchError(
            f"unknown band label(s) {unknown}: eoembed recognises Sentinel-2 names "
            "(B02…B12, B8A), STAC common names (blue, nir08, swir16…) and vv/vh. Rename "
            "them, map them with bands={'label': 'B04'}, drop them with "
            "`cube.drop_sel(band=[...])`, or pass extra_bands='ignore'."
        )
    ignored += unknown

    present_mods = {m for (m, _b) in found}
    if modalities == "auto":
        chosen = [m for m in spec.modalities if m in spec.required_modalities]
        for m in spec.modalities:
            if m not in chosen and all((m, b) in found for b in spec.modalities[m]):
                chosen.append(m)
    else:
        chosen = list(modalities)
        for m in chosen:
            if m not in spec.modalities:
                raise BandMismatchError(
                    f"{spec.name} does not read modality {m!r}; it reads {list(spec.modalities)}"
                )
    for m in spec.required_modalities:
        if m not in present_mods:
            raise BandMismatchError(
                f"{spec.name} needs {m} bands, but none of the cube's band labels "
                f"{labels} are {m} bands ({', '.join(spec.modalities[m])}). Check the "
                "band names or map them with bands={'label': 'B04', ...}."
            )
    for m in present_mods - set(chosen):
        ignored += [labels[i] for (mm, _b), i in found.items() if mm == m]

    sources = {m: [found.get((m, b), -1) for b in spec.modalities[m]] for m in chosen}
    plan = BandPlan({m: spec.modalities[m] for m in chosen}, sources, labels, ignored)

    if S2 in plan.modalities and spec.needs_weights:
        miss = plan.missing[S2]
        limit = len(spec.modalities[S2]) // 3 if max_missing is None else max_missing
        core_missing = [b for b in ("B02", "B03", "B04", "B08") if b in miss]
        if core_missing or len(miss) > limit:
            raise BandMismatchError(
                f"the cube lacks Sentinel-2 band(s) {miss} of the {len(spec.modalities[S2])} "
                f"{spec.name} reads; at most {limit} may be missing and the 10 m bands "
                "B02, B03, B04, B08 are always required. Load the missing bands (e.g. "
                "eoembed.data.sentinel2(..., bands=None) loads all), or raise "
                "max_missing= if you accept degraded embeddings."
            )
    for m in chosen:
        if m != S2 and plan.missing[m]:
            raise BandMismatchError(
                f"{m} needs all of {list(spec.modalities[m])}; the cube lacks {plan.missing[m]}"
            )
    return plan


# --- scale -------------------------------------------------------------------------
#: Physically possible Sentinel-2 values in DN (reflectance × 10 000), before or after
#: harmonization. Processing (atmospheric correction, the baseline-04 offset removed)
#: leaves small negatives: down to -1000 DN, so anything below -2000 DN is not
#: reflectance. Real surfaces stay below ~2.0 reflectance (20 000 DN; bright clouds,
#: snow, +1000 offset) and uint16 storage tops out at 65 535, so above 100 000 DN the
#: values are not reflectance in any convention.
DN_MIN = -2000.0
DN_MAX = 100_000.0


def _robust_max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, 99)) if finite.size else float("nan")


def isel_bands(da: xr.DataArray, index) -> xr.DataArray:
    """``da.isel(band=index)``, as a view when ``index`` is a run of consecutive bands (a list copies the array)."""
    index = [int(i) for i in index]
    if index and index[0] >= 0 and index == list(range(index[0], index[-1] + 1)):  # (negative: counted from the end)
        return da.isel(band=slice(index[0], index[-1] + 1))
    return da.isel(band=index)


def _any_finite(values: np.ndarray) -> bool:
    """Whether ``values`` holds a finite number: a strided sample first, the whole array only when it has none."""
    return bool(np.isfinite(sample_values(values)).any() or np.isfinite(values).any())


def sample_values(arr, max_values: int = 200_000) -> np.ndarray:
    """A strided subsample of ``arr`` (numpy or dask) that does not depend on chunking."""
    shape = arr.shape
    n = int(np.prod(shape))
    step = max(1, int(np.ceil((n / max_values) ** (1 / 2))))
    sub = arr[..., ::step, ::step]
    return np.asarray(sub.compute() if hasattr(sub, "compute") else sub, dtype="float64")


def _check_physical(sample: np.ndarray, factor: float, how: str, dtype) -> None:
    """Refuse values that are no Sentinel-2 reflectance under the chosen scale."""
    finite = sample[np.isfinite(sample)]
    if not finite.size:
        return
    p01, p1, p50, p99 = np.percentile(finite, [0.1, 1, 50, 99])
    seen = (f"percentiles of the Sentinel-2 values: 0.1% {p01:.4g}, 1% {p1:.4g}, median {p50:.4g}, "
            f"99% {p99:.4g} ({dtype}; {how})")
    expect = ("Expected L2A reflectance: DN 0–~20 000 (scale=10000, +1000 from baseline 04.00) or "
              "0–~2 (scale=1), with at most small negatives (≥ -0.1 reflectance).")
    if p50 * factor < 0:
        raise ScaleError(
            f"most values are negative, which no reflectance is: {seen}. {expect} An offset was "
            "probably removed twice or from the wrong data (check harmonization / add_offset)."
        )
    if p01 * factor < DN_MIN:
        wrapped = " Signed integers this negative usually mean uint16 DN read as int16 (wrapped): " \
                  "load as uint16 or `cube.astype('uint16')`." if np.issubdtype(dtype, np.signedinteger) else ""
        raise ScaleError(f"values far below zero: {seen}. {expect}{wrapped}")
    if p99 * factor > DN_MAX:
        raise ScaleError(
            f"values far beyond any Sentinel-2 range: {seen}. {expect} Check the units (a "
            "scale_factor applied twice, radiance instead of reflectance?) and pass scale= if "
            "the values are reflectance × some factor."
        )


def detect_scale(cube: xr.DataArray, s2_index: list[int], scale: float | str = "auto") -> tuple[float, str]:
    """Factor that turns the cube's Sentinel-2 values into DN (reflectance × 10 000).

    Returns ``(factor, reason)``. ``scale="auto"`` decides from dtype, attrs and a
    strided sample of the values; a number means "values are reflectance × scale"
    (10000 for DN, 1 for 0–1 reflectance).

    Raises
    ------
    ScaleError
        When the values fit neither convention, integers look like 0–1 reflectance, or
        the values are physically impossible under the scale (mostly negative, below
        -0.2 reflectance — e.g. int16 that wrapped —, or above 10 reflectance); the
        message gives the percentiles seen and what is expected.
    """
    idx = [i for i in s2_index if i >= 0]
    sample = sample_values(isel_bands(cube, idx).data) if idx else np.zeros(0)
    factor, how = _scale_factor(cube, sample, scale)
    _check_physical(sample, factor, how, cube.dtype)
    return factor, how


def _scale_factor(cube: xr.DataArray, sample: np.ndarray, scale: float | str) -> tuple[float, str]:
    if scale != "auto":
        try:
            s = float(scale)
        except (TypeError, ValueError):
            raise ScaleError(
                f"scale={scale!r} is not understood. Use scale='auto', scale=10000 (values "
                "are reflectance × 10 000, the L2A digital numbers) or scale=1 (0–1 reflectance)."
            ) from None
        if not s > 0:
            raise ScaleError(f"scale must be positive, got {scale!r}")
        return 10000.0 / s, f"given: values are reflectance × {s:g}"
    hint = cube.attrs.get("eoembed:scale")
    if hint is not None:
        return 10000.0 / float(hint), f"from attrs['eoembed:scale']={hint}"
    top = _robust_max(sample)
    integer = np.issubdtype(cube.dtype, np.integer)
    if not np.isfinite(top):
        return 1.0, "no valid values to inspect; assumed DN"
    if integer:
        if top <= 1:
            raise ScaleError(
                f"the cube is {cube.dtype} but its values are all 0 or 1 (99th percentile "
                f"{top:g}): it looks like 0–1 reflectance truncated to integers, which has "
                "lost the data. Load reflectance as float, or as DN (reflectance × 10 000)."
            )
        return 1.0, f"integer {cube.dtype}: DN (reflectance × 10 000)"
    if top <= 2.0:
        return 10000.0, f"float values up to {top:.3g}: 0–1 reflectance"
    if top >= 100.0:
        return 1.0, f"float values up to {top:.4g}: DN (reflectance × 10 000)"
    raise ScaleError(
        f"cannot tell the reflectance scale: the 99th percentile of Sentinel-2 values is "
        f"{top:.4g}, neither 0–1 reflectance (≤ 2) nor DN (≥ 100). State it: "
        "embed(..., scale=10000) for DN or scale=1 for 0–1 reflectance (or "
        "scale=100 for percent)."
    )


# --- harmonization -------------------------------------------------------------------
#: Per-timestep coordinates that carry a scene's own word on the offset (stackstac puts
#: item properties there).
_HARMONIZATION_COORDS = (sensors.APPLIED_PROPERTY, *sensors.BASELINE_PROPERTIES)


def harmonization_decisions(
    cube: xr.DataArray, harmonize: bool | str = "auto"
) -> tuple[np.ndarray, list[str]]:
    """DN offset to subtract from Sentinel-2 bands per timestep, and why.

    Sentinel-2 L2A from processing baseline 04.00 (acquisitions from 2022-01-25) adds
    +1000 to every reflectance DN. Each timestep follows :func:`eoembed.sensors.s2_offset`
    on its own coordinates: an ``earthsearch:boa_offset_applied`` flag, then the
    baseline (``s2:processing_baseline``/``processing:version``), then the acquisition
    date. ``attrs["eoembed:harmonized"] = True`` means it was already removed upstream
    (e.g. by :mod:`eoembed.data`, which reads each item's metadata).

    Returns ``(offsets, reasons)``: ``(T,)`` float offsets and one reason per timestep.
    """
    ntime = cube.sizes.get("time", 1)
    zeros = np.zeros(ntime, dtype="float64")
    if harmonize is False or harmonize == "none":
        return zeros, ["off"] * ntime
    if cube.attrs.get("eoembed:harmonized") in (True, 1, "true", "True"):
        return zeros, ["already harmonized upstream"] * ntime
    if harmonize not in (True, "auto"):
        raise ScaleError(f"harmonize must be 'auto', True or False, got {harmonize!r}")
    columns = {}
    for name in _HARMONIZATION_COORDS:
        if name in cube.coords:
            v = np.atleast_1d(cube[name].values)
            columns[name] = np.repeat(v, ntime) if v.size == 1 and ntime > 1 else v
    dated = "time" in cube.coords and np.issubdtype(cube["time"].dtype, np.datetime64)
    times = np.atleast_1d(cube["time"].values) if dated else [None] * ntime
    if not columns and not dated:
        if harmonize is True:
            return np.full(ntime, sensors.HARMONIZATION_OFFSET), ["forced"] * ntime
        warnings.warn(
            "No acquisition dates or s2:processing_baseline: Sentinel-2 harmonization "
            "(-1000 DN for baseline >= 04.00) was NOT applied. Pass harmonize=True if the "
            "data is from 2022-01-25 or later.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        return zeros, ["unknown dates: not applied"] * ntime
    offsets, reasons = [], []
    for t in range(ntime):
        props = {k: (None if v[t] is None or (isinstance(v[t], str) and not v[t]) else v[t]) for k, v in columns.items()}
        off, why = sensors.s2_offset(props, time=times[t])
        offsets.append(off)
        reasons.append(why)
    return np.asarray(offsets, dtype="float64"), reasons


#: Placeholder date for cubes without dates, for models that do not need them.
_PLACEHOLDER_DATE = (1, 6, 2022)  # (day, month 0-11, year): 2022-07-01


def timestamps(cube: xr.DataArray, spec: ModelSpec | None = None) -> np.ndarray:
    """``(T, 3)`` int array of (day, month 0–11, year) as OlmoEarth expects.

    A cube without ``time`` coordinates gets a placeholder date (2022-07-01), with a
    warning for learned encoders; models with ``spec.needs_dates`` (OlmoEarth encodes
    the month) refuse it with :class:`~eoembed.exceptions.MissingTimeError`.
    """
    if "time" not in cube.coords:
        how = ("Set the acquisition date(s): cube.expand_dims(time=[np.datetime64('2024-06-15')]) for a "
               "single image, or cube.assign_coords(time=[...]) when the cube has a time dim.")
        if spec is not None and spec.needs_dates:
            raise MissingTimeError(
                f"the cube has no 'time' coordinate, but {spec.name} encodes the acquisition month, "
                f"so a made-up date would change the embeddings. {how}"
            )
        if spec is not None and spec.needs_weights:
            warnings.warn(
                f"the cube has no 'time' coordinate; {spec.name} gets the placeholder date 2022-07-01. {how}",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        return np.array([_PLACEHOLDER_DATE] * cube.sizes.get("time", 1), dtype="int64")
    t = pd.DatetimeIndex(np.atleast_1d(cube["time"].values))
    return np.stack([t.day, t.month - 1, t.year], axis=1).astype("int64")


def nodata_value(cube: xr.DataArray) -> float | None:
    """The nodata value still present in the cube's values, or None.

    Follows rioxarray's rule (``cube.rio.nodata``): a ``_FillValue`` in ``attrs`` (or
    ``missing_value``/``fill_value``/``nodata``, or the file's nodata) is still in the
    data and marks missing pixels; a ``_FillValue`` in ``encoding``
    (``rio.encoded_nodata``) means xarray already decoded those pixels to NaN on
    reading, so the old fill value is *not* a marker any more — after decoding (and
    ``scale_factor``/``add_offset``) a real pixel may equal it. Returns NaN then.
    """
    try:
        nd = cube.rio.nodata
    except Exception:  # pragma: no cover - rioxarray cannot tell (odd dims)
        nd = None
        if cube.encoding.get("_FillValue") is None:
            for key in ("_FillValue", "missing_value", "fill_value", "nodata"):
                if cube.attrs.get(key) is not None:
                    nd = cube.attrs[key]
                    break
    return None if nd is None else float(nd)


# --- all band decisions in one place -------------------------------------------------------
@dataclass(frozen=True)
class PreparedBands:
    """Every decision about the cube's bands for one model: what :func:`prepare` returns.

    Attributes
    ----------
    plan: the :class:`BandPlan` (cube band → model band, missing and ignored labels).
    band_index: cube band positions used, in the order ``sources`` refers to.
    sources: modality → for each model band, its position in ``band_index`` (-1: missing).
    nodata: value still marking missing pixels in the cube (None when there is none).
    scale_factor, scale_how: factor turning Sentinel-2 values into DN, and why.
    offsets, harmonization: per-timestep DN offset to subtract, and why (one per timestep).
    s1_linear: Sentinel-1 values are linear power (converted to dB by the encoder).
    timestamps: per-timestep (day, month 0–11, year).
    """

    plan: BandPlan
    band_index: tuple[int, ...]
    sources: dict[str, list[int]]
    nodata: float | None
    scale_factor: float
    scale_how: str
    offsets: tuple[float, ...]
    harmonization: tuple[str, ...]
    s1_linear: bool
    timestamps: tuple[tuple[int, int, int], ...]

    @property
    def harmonization_how(self) -> str:
        """The per-timestep reasons as one sentence (one reason when they agree)."""
        uniq = list(dict.fromkeys(self.harmonization))
        return uniq[0] if len(uniq) == 1 else "; ".join(f"t{t}: {r}" for t, r in enumerate(self.harmonization))

    def select(self, cube: xr.DataArray) -> xr.DataArray:
        """The used bands of ``cube`` (``(time, band, y, x)``), declared nodata turned into NaN."""
        sub = isel_bands(cube, self.band_index)
        if self.nodata is not None and not np.isnan(self.nodata):
            sub = sub.where(sub != self.nodata)
        return sub


def prepare(
    cube: xr.DataArray,
    spec: ModelSpec,
    *,
    bands: dict[str, str] | None = None,
    modalities: tuple[str, ...] | str = "auto",
    extra_bands: str = "raise",
    max_missing: int | None = None,
    scale: float | str = "auto",
    harmonize: bool | str = "auto",
) -> PreparedBands:
    """Decide how ``cube`` (``(time, band, y, x)``) feeds ``spec``: bands, scale, offsets, dates.

    The one place where :func:`eoembed.embed` makes band decisions (like stackstac's
    ``prepare_items``): :func:`resolve_bands`, :func:`nodata_value`,
    :func:`detect_scale`, :func:`harmonization_decisions`, Sentinel-1 units and
    :func:`timestamps`. Reads a strided sample of the values (computes it for dask).
    Warns about missing Sentinel-2 bands (pointing at the caller).

    Raises
    ------
    BandMismatchError, ScaleError, MissingTimeError, EmptyDataError
        See the functions above; ``EmptyDataError`` when an in-memory cube holds no
        valid Sentinel-2 pixel.
    """
    from eoembed.exceptions import EmptyDataError

    plan = resolve_bands(cube, spec, bands=bands, modalities=modalities, extra_bands=extra_bands,
                         max_missing=max_missing)
    used = sorted({s for src in plan.sources.values() for s in src if s >= 0})
    remap = {s: i for i, s in enumerate(used)}
    sources = {m: [remap[s] if s >= 0 else -1 for s in src] for m, src in plan.sources.items()}
    nodata = nodata_value(cube)
    prep_nodata = None if nodata is None or np.isnan(nodata) else nodata
    sub = isel_bands(cube, used)
    if prep_nodata is not None:
        sub = sub.where(sub != prep_nodata)
    s2_idx = sources.get(S2, [])
    factor, scale_how = detect_scale(sub, s2_idx, scale)
    offsets, reasons = harmonization_decisions(cube, harmonize)
    s2_used = [i for i in s2_idx if i >= 0]
    if not sub.chunks and not (s2_used and _any_finite(isel_bands(sub, s2_used).values)):
        raise EmptyDataError(
            "the cube holds no valid Sentinel-2 pixels (all NaN or nodata). Check the area "
            "and dates, the nodata value, or the cloud mask that produced it."
        )
    s1_linear = False
    if S1 in sources:
        s1 = sample_values(sub.isel(band=[i for i in sources[S1] if i >= 0]).data)
        s1 = s1[np.isfinite(s1)]
        s1_linear = bool(s1.size and s1.min() >= 0 and np.percentile(s1, 99) < 2.0)
    stamps = timestamps(cube, spec)
    missing = plan.missing.get(S2, [])
    if missing and spec.needs_weights:
        how = spec.missing_bands_note or ("copied from the nearest band in wavelength (v1 was not trained with band dropout)"
               if spec.version == "v1" else f"set to 0 after normalization ({spec.version} was trained with band dropout)")
        warnings.warn(
            f"Sentinel-2 band(s) {', '.join(missing)} are not in the cube: {how}.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return PreparedBands(
        plan=plan,
        band_index=tuple(used),
        sources=sources,
        nodata=prep_nodata,
        scale_factor=float(factor),
        scale_how=scale_how,
        offsets=tuple(float(o) for o in offsets),
        harmonization=tuple(reasons),
        s1_linear=s1_linear,
        timestamps=tuple(tuple(int(v) for v in r) for r in stamps),
    )
