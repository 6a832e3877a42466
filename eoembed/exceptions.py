"""Typed errors raised by eoembed.

Every error derives from :class:`EOEmbedError` (a ``RuntimeError``) and, where it
fits, from the matching builtin (``ValueError``, ``KeyError``, ``ImportError``,
``FileNotFoundError``) so that generic ``except`` clauses still work. Messages say
what was wrong, what was expected and how to fix it.
"""

from __future__ import annotations


class EOEmbedError(RuntimeError):
    """Base class of every error eoembed raises on purpose."""


# --- input cubes -----------------------------------------------------------------
class InputError(EOEmbedError, ValueError):
    """The input cube cannot be embedded as given."""


class DimensionError(InputError):
    """The cube's dimensions are missing, extra or unusable."""


class MissingCRSError(InputError):
    """The cube has no coordinate reference system."""


class GeographicCRSError(InputError):
    """The cube is in a geographic (degrees) CRS; a projected CRS in metres is needed."""


class BandMismatchError(InputError):
    """Bands are missing, duplicated or unknown for the chosen model."""


class TooManyTimestepsError(InputError):
    """The cube has more timesteps than the model accepts."""


class ScaleError(InputError):
    """The reflectance scale of the cube is ambiguous or inconsistent."""


class TooSmallError(InputError):
    """The cube is smaller than one patch."""


class EmptyDataError(InputError):
    """The cube (or the part asked for) holds no valid pixels."""


class ParameterError(EOEmbedError, ValueError):
    """An option has an invalid value."""


# --- models and weights ----------------------------------------------------------
class UnknownModelError(EOEmbedError, KeyError):
    """No model is registered under the given name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class WeightsError(EOEmbedError):
    """Model weights could not be found, read or trusted."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No weights were found locally and none could be downloaded."""


class NetworkUnavailableError(WeightsNotFoundError):
    """Weights must be downloaded but the server cannot be reached (offline, firewall)."""


class CorruptWeightsError(WeightsError, ValueError):
    """A weights file exists but cannot be read as the expected checkpoint."""


class WeightsHashMismatchError(CorruptWeightsError):
    """A weights file's SHA-256 differs from the published value for its pinned revision."""


class UnsafeWeightsError(WeightsError, ValueError):
    """A weights file holds pickled Python objects, which eoembed refuses to load."""


class MissingOptionalDependency(EOEmbedError, ImportError):
    """An optional dependency needed for this feature is not installed."""


# --- data access (eoembed.data) --------------------------------------------------
class DataSourceError(EOEmbedError):
    """A catalogue or asset could not be reached or read."""


class NoItemsFoundError(DataSourceError, LookupError):
    """A STAC search returned no items."""


class QueryError(EOEmbedError, ValueError):
    """A search/data query (bbox, dates, collection, point, polygon) is invalid."""


# --- search and few-shot (eoembed.index, eoembed.classify) -----------------------
class IndexMismatchError(EOEmbedError, ValueError):
    """A query or cube does not match the index (model, dimension, CRS)."""


class LabelError(EOEmbedError, ValueError):
    """Training labels are empty, single-class or outside the cube."""


class TooFewLabelsError(LabelError):
    """A class has too few labelled samples to be split for cross-validation."""


def require(module: str, extra: str, feature: str):  # pragma: no cover - trivial
    """Import ``module`` or raise :class:`MissingOptionalDependency` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingOptionalDependency(
            f"{feature} needs the optional package {module!r}, which is not installed. "
            f"Install it with: pip install 'eoembed[{extra}]'"
        ) from err


# --- appended (issue 8) -------------------------------------------------------------
class MissingTimeError(InputError):
    """The cube has no acquisition dates but the model encodes them."""


def user_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` in the calling function that points at user code.

    Counts frames from the caller up to the first one outside the ``eoembed`` package,
    so a warning raised deep inside eoembed (through the ``.eo`` accessor, ``embed``,
    ``bands``…) names the user's file and line, whatever the call path.
    """
    import os
    import sys

    pkg = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(pkg):
        frame = frame.f_back
        level += 1
    return level


# --- appended (issue 17) ------------------------------------------------------------
class CoordinateError(InputError):
    """The cube's x/y (or time) coordinates are not a regular, monotonic grid."""


class TimeCoordinateError(InputError):
    """The cube's time coordinate cannot be used as acquisition dates (unparsable, NaT, unsorted)."""


class StoreError(EOEmbedError):
    """An output store cannot be written, resumed or trusted."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


class StoreIntegrityError(StoreError, ValueError):
    """A store's data does not match what its run recorded (missing, tampered or truncated)."""


class StoreMismatchError(StoreError, InputError):
    """An existing store was written by another run (other input data, model or settings)."""


class GridAttrsError(StoreError, ValueError):
    """An embedding cube's attrs do not describe its patch grid (missing keys, or a newer attrs version)."""


# --- appended (issue 19: analyses) ---------------------------------------------------
class GridMismatchError(InputError):
    """Two embedding cubes that must share a patch grid (CRS, transform, shape, patch size) do not."""


# --- appended (issue 25: one patch locator) ------------------------------------------
class OutsideCubeError(QueryError):
    """A point or polygon given to locate patches lies outside the cube's patch grid."""


# --- appended (issues 25/27/29: stores and products) ---------------------------------
class ProductFormatError(InputError):
    """A file's content does not match the embedding product format given or detected."""


class TransformError(ParameterError):
    """An affine transform is malformed: wrong length, rotated or sheared, or in GDAL's geotransform order."""


# --- appended (issue 29: sample data and weights from their sources) ------------------
class UnknownSampleError(EOEmbedError, KeyError):
    """No registered sample file or group has the given name (eoembed.data.sample)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DownloadError(DataSourceError):
    """A registered file (sample data, weights, test oracle) has no verified local copy and could not be fetched."""


class DownloadUnreachableError(DownloadError, ConnectionError):
    """The server cannot be reached (no network, firewall, wrong EOEMBED_DATA_URL), or downloads are turned off."""


class DownloadNotFoundError(DownloadError, FileNotFoundError):
    """The server answered with an error (HTTP 404…) for the pinned URL."""


class DownloadIncompleteError(DownloadError, ValueError):
    """The download broke off before the end; nothing was kept."""


class DownloadHashMismatchError(DownloadIncompleteError):
    """A downloaded or mirrored file's SHA-256 differs from the published one; nothing was kept."""


# --- appended (issue 29 item 4: published products read from where they live) --------
class BBoxError(QueryError):
    """A bounding box is malformed: not four finite numbers, west > east, south > north, or outside lon/lat range."""


class ProductIndexError(DataSourceError, ValueError):
    """A producer's tile index (AlphaEarth ``aef_index.parquet``, geotessera ``manifest.parquet``) cannot be read
    or does not have the published columns, or disagrees with the files it lists."""


class MissingTileError(DataSourceError, LookupError):
    """No published tile covers the bounding box for that year, or a tile the index lists is not on the server."""
