"""The GPU path's decisions, tested on CPU: autocast dtype per device/family, pinned
non-blocking copies only on CUDA, ``torch.compile`` (eager == compiled), and which GPU
a dask worker takes. The runs that need CUDA are marked ``gpu`` (skipped without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import eoembed
from eoembed import exceptions as E
from eoembed.models import _torchcommon as tc
from eoembed.testing import synthetic_cube

torch = pytest.importorskip("torch")

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
GALILEO = SHARED / "weights" / "galileo-nano"
S2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
needs_galileo = pytest.mark.skipif(not (GALILEO / "encoder.pt").is_file(),
                                   reason=f"real Galileo-Nano weights not found at {GALILEO} (clone ../shared)")
TORCH_FAMILIES = ("olmoearth", "galileo", "presto", "prithvi", "vitmae", "phileo")


# --- precision: which dtype for which device and family ------------------------------
@pytest.mark.parametrize("family", TORCH_FAMILIES)
def test_cpu_and_mps_run_fp32(family):
    assert tc.autocast_dtype("cpu", family) is None
    assert tc.autocast_dtype("mps", family) is None


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_runs_bf16_except_fp32_families(device):
    for family in TORCH_FAMILIES:
        want = None if family == "presto" else "bfloat16"
        assert tc.autocast_dtype(device, family) == want, family
    assert set(tc.FP32_FAMILIES) == {"presto"}  # a family added here needs its reason in the comment


def test_every_registered_torch_family_is_covered():
    families = {eoembed.get_model_spec(n).family for n in eoembed.list_models()}
    assert families - {"spectral"} == set(TORCH_FAMILIES)


@pytest.mark.parametrize(("name", "device", "want"), [
    ("nano", "cuda:1", "bfloat16 autocast"), ("galileo-nano", "cuda", "bfloat16 autocast"),
    ("presto", "cuda", "float32"), ("nano", "cpu", "float32"), ("spectral", "cpu", "float32"),
])
def test_precision_is_stamped_into_the_attrs(name, device, want):
    from eoembed.models.weights import provenance_attrs

    assert provenance_attrs(eoembed.get_model_spec(name), None, device)["eoembed:precision"] == want


def test_inference_context_on_cpu_is_plain_fp32_inference():
    a = torch.randn(4, 4)
    with tc.inference("cpu", "olmoearth"):
        assert torch.is_inference_mode_enabled()
        assert not torch.is_autocast_enabled("cuda") and not torch.is_autocast_enabled("cpu")
        out = a @ a
    assert out.dtype == torch.float32 and out.is_inference()
    assert not torch.is_inference_mode_enabled()  # left again on exit


def test_to_device_on_cpu_is_the_plain_conversion():
    x = np.arange(12, dtype="float32").reshape(3, 4)
    t = tc.to_device(x, "cpu")
    assert t.device.type == "cpu" and t.dtype == torch.float32
    assert np.shares_memory(t.numpy(), x)  # no copy, no pinning on CPU
    m = tc.to_device(np.array([1, 11]), "cpu", dtype=torch.long)
    assert m.dtype == torch.long and m.tolist() == [1, 11]
    v = tc.to_device(np.ones((2, 3), bool)[:, ::2], "cpu")  # non-contiguous views are accepted
    assert v.dtype == torch.bool and v.shape == (2, 2)


# --- several GPUs: one dask worker per GPU -------------------------------------------
@pytest.mark.parametrize(("count", "rank", "want"), [
    (4, 0, "cuda:0"), (4, 3, "cuda:3"), (4, 5, "cuda:1"), (2, 7, "cuda:1"),
    (1, 3, "cuda"), (4, None, "cuda"), (0, 1, "cuda"),
])
def test_worker_gpu_choice(count, rank, want):
    assert tc.cuda_for_worker(count, rank) == want


def test_resolve_device_cuda_takes_the_workers_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(tc, "dask_worker_rank", lambda: 6)
    assert tc.resolve_device("cuda") == "cuda:2"
    assert tc.resolve_device("auto") == "cuda"  # outside the worker logic: auto → plain cuda
    assert tc.resolve_device("cuda:1") == "cuda:1"  # an explicit GPU is kept
    monkeypatch.setattr(tc, "dask_worker_rank", lambda: None)
    assert tc.resolve_device("cuda") == "cuda"


def test_no_worker_rank_outside_dask():
    assert tc.dask_worker_rank() is None


def test_each_local_cluster_worker_takes_its_own_gpu():
    distributed = pytest.importorskip("distributed")

    def choice():
        return tc.cuda_for_worker(2, tc.dask_worker_rank())

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        workers = sorted(client.scheduler_info()["workers"].items(), key=lambda kv: kv[1]["name"])
        got = [client.submit(choice, workers=[addr], pure=False).result() for addr, _ in workers]
    assert got == ["cuda:0", "cuda:1"]


# --- torch.compile ---------------------------------------------------------------------
class _FakeEncoder:
    def __init__(self):
        self.module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU())


class _PartsEncoder(_FakeEncoder):
    def compile_targets(self):
        return [self.module[0]]


def test_compile_copies_and_leaves_the_eager_encoder_alone():
    eager = _FakeEncoder()
    comp = tc.compile_encoder(eager)
    assert comp is not eager and comp.module is not eager.module and comp.compiled
    assert eager.module._compiled_call_impl is None  # the cached eager model is untouched
    assert comp.module._compiled_call_impl is not None
    assert comp.module[0].weight is not eager.module[0].weight
    assert torch.equal(comp.module[0].weight, eager.module[0].weight)


def test_compile_uses_the_familys_own_targets():
    comp = tc.compile_encoder(_PartsEncoder())
    assert comp.module[0]._compiled_call_impl is not None
    assert comp.module._compiled_call_impl is None


def test_family_compile_targets_are_modules_the_encoder_calls():
    from eoembed.models import phileo, vitmae
    from eoembed.models._phileonet import GeoAwareEncoder
    from eoembed.models._vit import PlainViT

    vit = vitmae.ViTMAEEncoder.__new__(vitmae.ViTMAEEncoder)
    vit.module = PlainViT(16, 2, 2, 5, final_norm=True)
    assert vit.compile_targets() == [vit.module.patch_embed, *vit.module.blocks]
    phi = phileo.PhilEOEncoder.__new__(phileo.PhilEOEncoder)
    phi.module = GeoAwareEncoder(bands=10, depths=(1, 1), dims=(32, 64))
    targets = phi.compile_targets()
    assert targets[0] is phi.module.stem and len(targets) == 1 + 2 * 2
    assert all(isinstance(t, torch.nn.Module) for t in targets)


def test_compile_needs_a_torch_model():
    with pytest.raises(E.ParameterError, match="compile=False"):
        eoembed.load_model("spectral", compile=True)


@needs_galileo
def test_compile_is_part_of_the_model_cache_key():
    eager = eoembed.load_model("galileo-nano", weights=GALILEO, device="cpu")
    comp = eoembed.load_model("galileo-nano", weights=GALILEO, device="cpu", compile=True)
    assert comp is not eager and getattr(comp, "compiled", False) and not getattr(eager, "compiled", False)
    assert eoembed.load_model("galileo-nano", weights=GALILEO, device="cpu", compile=True) is comp
    assert eoembed.load_model("galileo-nano", weights=GALILEO, device="cpu") is eager
    assert comp.provenance()["eoembed:compiled"] == 1 and "eoembed:compiled" not in eager.provenance()
    assert comp.provenance()["eoembed:weights_sha256"] == eager.provenance()["eoembed:weights_sha256"]


@needs_galileo
@pytest.mark.slow
def test_compiled_embedding_equals_eager_on_cpu():
    cube = synthetic_cube(height=16, width=16, times=2, bands=S2, seed=3)
    kw = dict(weights=GALILEO, device="cpu", patch_size=4, tile_size=16, halo=0, progress=False)
    eager = eoembed.embed(cube, "galileo-nano", **kw)
    comp = eoembed.embed(cube, "galileo-nano", compile=True, **kw)
    assert np.isfinite(eager.values).all()
    np.testing.assert_allclose(comp.values, eager.values, atol=1e-5, rtol=0)
    assert comp.attrs["eoembed:compiled"] == 1 and eager.attrs["eoembed:precision"] == "float32"


# --- on a GPU -------------------------------------------------------------------------
@needs_galileo
@pytest.mark.gpu
def test_galileo_bf16_gpu_matches_cpu():
    """bf16 autocast on CUDA vs fp32 on CPU: cosine similarity per patch >= 0.99."""
    cube = synthetic_cube(height=32, width=32, times=3, bands=S2, seed=4)
    kw = dict(weights=GALILEO, patch_size=4, tile_size=32, halo=0, progress=False)
    cpu = eoembed.embed(cube, "galileo-nano", device="cpu", **kw).values
    gpu = eoembed.embed(cube, "galileo-nano", device="cuda", **kw).values
    cos = (cpu * gpu).sum(0) / np.sqrt((cpu**2).sum(0) * (gpu**2).sum(0))
    assert cos.min() > 0.99


@needs_galileo
@pytest.mark.gpu
def test_compiled_gpu_matches_eager_gpu():
    cube = synthetic_cube(height=32, width=32, times=3, bands=S2, seed=5)
    kw = dict(weights=GALILEO, device="cuda", patch_size=4, tile_size=32, halo=0, progress=False)
    eager = eoembed.embed(cube, "galileo-nano", **kw).values
    comp = eoembed.embed(cube, "galileo-nano", compile=True, **kw).values
    np.testing.assert_allclose(comp, eager, atol=2e-2)  # both bf16; kernels may fuse differently


@pytest.mark.gpu
def test_pinned_non_blocking_copy_on_cuda():
    x = np.random.default_rng(0).normal(size=(64, 64)).astype("float32")
    t = tc.to_device(x, "cuda")
    torch.cuda.synchronize()
    assert t.device.type == "cuda" and np.array_equal(t.cpu().numpy(), x)
