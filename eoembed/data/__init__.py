"""Getting cubes: open local files (:func:`open_cube`) and search STAC catalogues."""

from __future__ import annotations

from eoembed.data._open import open_cube

__all__ = ["open_cube"]
