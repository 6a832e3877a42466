"""Getting cubes: open local files (:func:`open_cube`), search STAC catalogues, and the registered sample
files (:func:`sample`: the demo's cube, the labelled extraction, weights; from a mirror, the cache or upstream)."""

from __future__ import annotations

from eoembed.data._composite import TimestepLimitError
from eoembed.data._open import open_cube
from eoembed.data._reader import AssetReadError
from eoembed.data._retry import RetryPolicy
from eoembed.data._sample import SampleUnavailableError, fetch_sample
from eoembed.data.registry import SAMPLE_CUBE, fetch, sample
from eoembed.data._training import (
    CROP_TYPES,
    align_to,
    crop_type_names,
    read_extraction,
    training_cube,
    training_labels,
    training_surface_temperature,
)
from eoembed.data.stac import landsat, search_items, sentinel1, sentinel2

__all__ = [
    "open_cube",
    "sentinel2",
    "sentinel1",
    "landsat",
    "search_items",
    "fetch_sample",
    "sample",
    "fetch",
    "SAMPLE_CUBE",
    "RetryPolicy",
    "AssetReadError",
    "SampleUnavailableError",
    "TimestepLimitError",
    "read_extraction", "align_to", "training_cube", "training_labels", "crop_type_names", "CROP_TYPES",
    "training_surface_temperature",
]
