"""The Sentinel-1/2 channel groups of the NASA Harvest families (Galileo, Presto).

Both models tokenize a timestep as one token per channel group (Sentinel-1 VV/VH;
Sentinel-2 RGB, red edge, NIR 10 m, NIR 20 m, SWIR; NDVI, which eoembed computes from
B04/B08), and mask a group where its modality has no data or the cube lacks one of its
bands. The tables, the NumPy glue for them and the normalizer both families share
(:class:`ChannelGroupEncoder`) live here once, so neither family imports the other.
No torch import.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from eoembed.models._encoder import TorchEncoder
from eoembed.sensors import S1, S1_BANDS, S2

#: The ten Sentinel-2 bands the families read, in their checkpoints' channel order.
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: Token groups in the models' order: name → (modality, bands). NDVI is derived.
GROUPS: "OrderedDict[str, tuple[str, tuple[str, ...]]]" = OrderedDict([
    ("S1", (S1, S1_BANDS)),
    ("S2_RGB", (S2, ("B02", "B03", "B04"))),
    ("S2_Red_Edge", (S2, ("B05", "B06", "B07"))),
    ("S2_NIR_10m", (S2, ("B08",))),
    ("S2_NIR_20m", (S2, ("B8A",))),
    ("S2_SWIR", (S2, ("B11", "B12"))),
    ("NDVI", (S2, ("B04", "B08"))),
])
#: Input channels of each group's projection (NDVI is one channel made from two bands).
IN_CHANNELS = {g: len(bands) if g != "NDVI" else 1 for g, (_, bands) in GROUPS.items()}


def ndvi(s2: np.ndarray) -> np.ndarray:
    """NDVI from ``(..., 10)`` Sentinel-2 values in :data:`S2_BANDS` order (NaN where B04/B08 are)."""
    red, nir = s2[..., S2_BANDS.index("B04")], s2[..., S2_BANDS.index("B08")]
    with np.errstate(divide="ignore", invalid="ignore"):
        total = nir + red
        out = np.where(total != 0, (nir - red) / total, 0.0).astype("float32")
    return np.where(np.isfinite(red) & np.isfinite(nir), out, np.nan).astype("float32")


def group_visibility(modalities: dict[str, tuple[str, ...]], visible: dict[str, np.ndarray],
                     present: dict[str, np.ndarray]) -> np.ndarray:
    """``(..., G)`` bool over :data:`GROUPS`: seen where the modality is and all its bands exist.

    ``modalities`` is the spec's band order per modality; ``visible`` modality →
    ``(B, h, w, T)``; ``present`` modality → ``(C,)`` bool (the cube has the band).
    """
    ref = visible[S2]
    out = []
    for _, (m, bands) in GROUPS.items():
        if m not in visible:
            out.append(np.zeros(ref.shape, bool))
            continue
        names = modalities[m]
        has = all(bool(present[m][names.index(b)]) for b in bands)
        out.append(visible[m] & has)
    return np.stack(out, axis=-1)


def group_arrays(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Normalized modality arrays (S2 with NDVI as channel 10) → :data:`GROUPS` arrays, NaN → 0."""
    s2 = np.nan_to_num(data[S2])
    s1 = np.nan_to_num(data[S1]) if S1 in data else np.zeros(s2.shape[:-1] + (2,), "float32")
    out = {}
    for g, (m, bands) in GROUPS.items():
        if g == "NDVI":
            arr = s2[..., 10:11]
        elif m == S1:
            arr = s1
        else:
            arr = s2[..., [S2_BANDS.index(x) for x in bands]]
        out[g] = np.ascontiguousarray(arr, dtype="float32")
    return out


class ChannelGroupEncoder(TorchEncoder):
    """The adapter base of the channel-group families: ``(x − shift) / div`` per band.

    ``shift`` and ``div`` are 12 float32 values, Sentinel-1 ``vv, vh`` then
    :data:`S2_BANDS`; the Sentinel-2 array gets the NDVI of its raw bands appended
    as channel 10 (NDVI is used as is).
    """

    shift: np.ndarray
    div: np.ndarray

    def normalize(self, modality: str, data: np.ndarray) -> np.ndarray:
        """S1 dB / S2 DN → normalized; for S2 the NDVI (from raw B04, B08) is appended as channel 10."""
        x = np.asarray(data, dtype="float32")
        if modality == S1:
            return (x - self.shift[0:2]) / self.div[0:2]
        if modality != S2:
            raise ValueError(f"{self.spec.family} reads sentinel2_l2a and sentinel1, not {modality!r}")
        return np.concatenate([(x - self.shift[2:12]) / self.div[2:12], ndvi(x)[..., None]], axis=-1)
