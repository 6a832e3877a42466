"""The scale path: a lazy cube embedded on a real dask.distributed LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest

import eoembed
from eoembed.testing import synthetic_cube

distributed = pytest.importorskip("distributed")


@pytest.mark.slow
def test_embed_on_a_local_cluster_matches_the_eager_result(checkpoints, tmp_path):
    cube = synthetic_cube(height=96, width=96, times=2, seed=8)
    ck = checkpoints["v1.1"]
    eager = eoembed.embed(cube, "nano", weights=ck, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as client:
        lazy = eoembed.embed(cube.chunk({"y": 48, "x": 48}), "nano", weights=ck)
        from eoembed.io import open_embeddings, save_embeddings

        save_embeddings(lazy, tmp_path / "emb.zarr")  # streams block by block through the workers
        assert len(client.scheduler_info()["workers"]) == 2
    back = open_embeddings(tmp_path / "emb.zarr")
    np.testing.assert_allclose(back.values, eager.values, atol=1e-5, equal_nan=True)
    assert back.rio.crs == eager.rio.crs
