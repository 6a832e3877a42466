"""eoembed: Earth-observation datacubes to georeferenced embedding cubes."""

from __future__ import annotations

__version__ = "0.1.0"
