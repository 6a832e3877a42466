"""Pyramids as the explorer reads them: re-exported from :mod:`eoembed.io` (the stores layer writes them).

``from eoembed.explore.pyramid import write_pyramid`` (the notebooks' and docs' import path) keeps working.
"""

from __future__ import annotations

from eoembed.io import PCA_COG, coarsen_embeddings, open_pyramid, pyramid_pca_cog, write_pyramid

__all__ = ["PCA_COG", "coarsen_embeddings", "open_pyramid", "pyramid_pca_cog", "write_pyramid"]
