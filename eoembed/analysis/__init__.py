"""Analyses of embedding cubes beyond search and classification.

* :func:`cluster` — unsupervised cluster map ("kinds of place"), FAISS k-means, ``k``
  chosen by silhouette when not given;
* :func:`change` — per-patch cosine distance between two cubes (or two timesteps), a
  threshold (Otsu or given) and the most-changed patches;
* :func:`regress` — continuous targets (points or a raster) with spatial-block CV
  against the mean and spectral baselines, a prediction map and uncertainty;
* :func:`trajectory` — a place's similarity to its own first timestep and PCA-1 over time;
* :func:`to_objects` — a thresholded map as counted, measured polygons.
"""

from eoembed.analysis.change import ChangeResult, change, cosine_distance, otsu_threshold
from eoembed.analysis.cluster import ClusterModel, cluster, fit_clusters
from eoembed.analysis.regress import RegressionResult, make_regressor, regress, sample_targets
from eoembed.analysis.objects import to_objects
from eoembed.analysis.time import trajectory

__all__ = ["ChangeResult", "ClusterModel", "RegressionResult", "change", "cluster", "cosine_distance",
           "fit_clusters", "make_regressor", "otsu_threshold", "regress", "sample_targets", "to_objects", "trajectory"]
