"""The scale path: a lazy cube embedded on a real dask.distributed LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest

import eoembed
from eoembed.testing import synthetic_cube

distributed = pytest.importorskip("distributed")


def _count_loads():
    """On a worker: count calls of the OlmoEarth loader from now on."""
    from eoembed.models import registry

    real = registry._LOADERS["olmoearth"]
    if getattr(real, "counts", None) is None:
        def counting(*a, **k):
            counting.counts += 1
            return real(*a, **k)

        counting.counts = 0
        registry._LOADERS["olmoearth"] = counting


def _loads():
    from eoembed.models import registry

    return getattr(registry._LOADERS["olmoearth"], "counts", 0)


@pytest.mark.slow
def test_embed_on_a_local_cluster_loads_the_model_once_per_worker(checkpoints, tmp_path):
    cube = synthetic_cube(height=96, width=96, times=2, seed=8)
    ck = checkpoints["v1.1"]
    eager = eoembed.embed(cube, "nano", weights=ck, progress=False, blend=False)
    src = tmp_path / "cube.nc"
    cube.to_dataset(dim="band").to_netcdf(src)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as client:
        client.run(_count_loads)
        lazy = eoembed.embed(cube.chunk({"y": 32, "x": 32}), "nano", weights=ck, blend=False)
        assert lazy.data.npartitions >= 4
        from eoembed.io import open_embeddings, to_zarr

        info = to_zarr(lazy, tmp_path / "emb.zarr", progress=False)  # streams region by region through the workers
        assert info["written"] == lazy.data.npartitions
        loads = client.run(_loads)
        assert len(loads) == 2 and all(n <= 1 for n in loads.values()) and sum(loads.values()) >= 1, loads
        # a second run on the same workers reuses their models
        eoembed.embed(cube.chunk({"y": 48, "x": 48}), "nano", weights=ck).compute()  # blended default
        assert client.run(_loads) == loads
        # the command line on an existing scheduler address
        from eoembed.cli import main

        out = tmp_path / "cli.zarr"
        assert main(["embed", str(src), "-o", str(out), "--model", "nano", "--weights", str(ck), "--quiet",
                     "--no-blend", "--cluster", cluster.scheduler_address]) == 0
    back = open_embeddings(tmp_path / "emb.zarr")
    np.testing.assert_allclose(back.values, eager.values, atol=1e-5, equal_nan=True)
    assert back.rio.crs == eager.rio.crs
    np.testing.assert_allclose(open_embeddings(out).values, eager.values, atol=1e-5, equal_nan=True)
