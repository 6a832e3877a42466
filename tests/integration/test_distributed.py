"""The scale path: a lazy cube embedded on a real dask.distributed LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest

import eoembed
from eoembed.models import clear_model_cache
from eoembed.testing import synthetic_cube

distributed = pytest.importorskip("distributed")


def _loads():
    """On a worker: encoders this process has built."""
    from eoembed.models import model_cache_info

    return model_cache_info()["loads"]


def _preload_registered(ck):
    """On a worker: the registered Presto loaded first (it used to stand in for any spec named 'presto')."""
    from eoembed.models import load_model

    load_model("presto", weights=ck, device="cpu")
    return _loads()


@pytest.mark.slow
def test_embed_on_a_local_cluster_loads_the_model_once_per_worker(checkpoints, tmp_path):
    cube = synthetic_cube(height=96, width=96, times=2, seed=8)
    ck = checkpoints["v1.1"]
    eager = eoembed.embed(cube, "nano", weights=ck, progress=False, blend=False)
    src = tmp_path / "cube.nc"
    cube.to_dataset(dim="band").to_netcdf(src)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as client:
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


@pytest.mark.slow
def test_a_replaced_or_unregistered_spec_runs_on_a_worker_process_as_in_process(tmp_path):
    """The frozen spec travels in the graph: a worker process that loaded the registered
    Presto first, and knows no model named 'presto-2heads', computes each custom spec exactly
    as the client does."""
    pytest.importorskip("torch")
    from _modelfixtures import CUSTOM, EMBED_KW, REGISTERED, UNREGISTERED, make_presto_checkpoint

    ck = make_presto_checkpoint(tmp_path / "default_model.pt")
    cube = synthetic_cube(height=16, width=16, times=2, seed=3)
    specs = (REGISTERED, CUSTOM, UNREGISTERED)
    eager = {}
    for spec in specs:
        clear_model_cache()
        eager[spec.num_heads] = eoembed.embed(cube, spec, weights=ck, progress=False, **EMBED_KW).values
    assert not np.allclose(eager[4], eager[8], atol=1e-3) and not np.allclose(eager[2], eager[8], atol=1e-3)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as client:
        (before,) = client.run(_preload_registered, str(ck)).values()
        for spec in (CUSTOM, UNREGISTERED, REGISTERED):
            lazy = eoembed.embed(cube.chunk({"y": 8, "x": 8}), spec, weights=ck, **EMBED_KW)
            assert lazy.data.npartitions > 1
            np.testing.assert_allclose(lazy.compute().values, eager[spec.num_heads], atol=1e-5)
        (after,) = client.run(_loads).values()
    assert after == before + 2  # one build per custom spec; the registered one reused
