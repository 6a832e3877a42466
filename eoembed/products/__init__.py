"""Published embedding products in: AlphaEarth, TESSERA, GeoParquet rows, any raster of vectors.

Two ways in:

* :func:`open_embeddings` (the one reader, defined in :mod:`eoembed.io` and re-exported here) opens a
  product file that is already at hand — a local path or one URL (:mod:`eoembed.products._formats`
  describes every format it reads);
* :func:`alphaearth` and :func:`tessera` (:mod:`eoembed.products.remote`) find the tiles covering a
  bounding box in the producer's own published index (AlphaEarth's ``aef_index.parquet``, geotessera's
  ``manifest.parquet``), read only the windows needed over HTTP and mosaic them onto one grid.

Both return the same embedding cube: an ``xr.DataArray`` named ``"embeddings"``, dims
``("embedding", "y", "x")``, float32, NaN where masked, CRS and transform written, ``eoembed:*`` attrs
stating the product, its provenance and licence.
"""

from __future__ import annotations

from eoembed.products._formats import (  # noqa: F401  (the public names, and the reader the package root wires)
    ALPHAEARTH_ATTRIBUTION,
    ALPHAEARTH_NODATA,
    FORMATS,
    GRID_MIN_FILL,
    RASTER_CHUNK,
    TIME_COLUMNS,
    PointEmbeddings,
    _open_product,
    dequantize_alphaearth,
    dequantize_tessera,
    open_embeddings,
    open_store,
    quantize_alphaearth,
    register_reader,
)
from eoembed.products.remote import alphaearth, tessera  # noqa: F401

__all__ = [
    "ALPHAEARTH_ATTRIBUTION", "FORMATS", "GRID_MIN_FILL", "PointEmbeddings", "alphaearth", "dequantize_alphaearth",
    "dequantize_tessera", "open_embeddings", "quantize_alphaearth", "tessera",
]  # fmt: skip
