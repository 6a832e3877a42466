"""Deprecated name of :mod:`eoembed.cube` (the embedding-cube format).

Kept only so that branches written against the old private name (``eoembed.explore``,
benchmarks) keep importing while they move to ``eoembed.cube``; it defines nothing.
"""

from eoembed.cube import *  # noqa: F401,F403
from eoembed.cube import __all__  # noqa: F401
