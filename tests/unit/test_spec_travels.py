"""The spec travels whole: a ``dataclasses.replace`` of a registered spec, or a spec that was
never registered, is its own model in every load order, on dask's threaded scheduler and after
a pickle round trip of the graph (a real ``dask.distributed`` cluster: tests/integration/
test_distributed.py).

The model is Presto with a test-built random checkpoint in the published layout; the custom
specs change only ``num_heads`` (tests/_modelfixtures.py).
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import dask
import numpy as np
import pytest
from _modelfixtures import CUSTOM, EMBED_KW, REGISTERED, UNREGISTERED, make_presto_checkpoint

import eoembed
from eoembed import models
from eoembed.exceptions import UnknownModelError
from eoembed.models import registry
from eoembed.testing import synthetic_cube

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def presto_ckpt(tmp_path_factory):
    return make_presto_checkpoint(tmp_path_factory.mktemp("presto") / "default_model.pt")


@pytest.fixture(scope="module")
def cube():
    return synthetic_cube(height=16, width=16, times=2, seed=3)


def _embed(cube, spec, ck):
    return eoembed.embed(cube, spec, weights=ck, progress=False, **EMBED_KW).values


@pytest.fixture(scope="module")
def eager(cube, presto_ckpt):
    """In-process results of each spec, each in a fresh cache (the reference)."""
    out = {}
    for spec in (REGISTERED, CUSTOM, UNREGISTERED):
        models.clear_model_cache()
        out[spec.num_heads] = _embed(cube, spec, presto_ckpt)
    models.clear_model_cache()
    return out


def test_the_custom_specs_change_the_output(eager):
    assert np.isfinite(eager[8]).all()
    for heads in (4, 2):
        assert np.abs(eager[heads] - eager[8]).max() > 1e-2


@pytest.mark.parametrize("first", ["registered", "custom"])
def test_each_spec_is_its_own_model_in_either_load_order(cube, presto_ckpt, eager, first):
    order = (REGISTERED, CUSTOM) if first == "registered" else (CUSTOM, REGISTERED)
    encs = {}
    for spec in order:
        encs[spec.num_heads] = models.load_model(spec, weights=presto_ckpt, device="cpu")
        np.testing.assert_array_equal(_embed(cube, spec, presto_ckpt), eager[spec.num_heads])
    assert encs[8] is not encs[4]
    assert encs[4].spec.num_heads == 4 and encs[8].spec.num_heads == 8
    # and each is cached under its own spec: no reload, the same object back
    loads = models.model_cache_info()["loads"]
    assert models.load_model(CUSTOM, weights=presto_ckpt, device="cpu") is encs[4]
    assert models.load_model("presto", weights=presto_ckpt, device="cpu") is encs[8]
    assert models.model_cache_info()["loads"] == loads


def test_the_graph_carries_the_spec_on_threads_and_through_pickle(cube, presto_ckpt, eager):
    for spec in (CUSTOM, UNREGISTERED):
        models.clear_model_cache()
        models.load_model(REGISTERED, weights=presto_ckpt, device="cpu")  # the registered model loaded first
        lazy = eoembed.embed(cube.chunk({"y": 8, "x": 8}), spec, weights=presto_ckpt, **EMBED_KW)
        assert lazy.data.npartitions > 1
        with dask.config.set(scheduler="threads"):
            np.testing.assert_allclose(lazy.values, eager[spec.num_heads], atol=1e-5)
        shipped = pickle.loads(pickle.dumps(lazy))  # what a scheduler sends to another process
        models.clear_model_cache()
        models.load_model(REGISTERED, weights=presto_ckpt, device="cpu")
        with dask.config.set(scheduler="threads"):
            np.testing.assert_allclose(shipped.values, eager[spec.num_heads], atol=1e-5)
        assert shipped.attrs["eoembed:model"] == spec.name


def test_the_cache_key_is_every_field_not_the_name():
    assert models.spec_token(REGISTERED) == models.spec_token(replace(REGISTERED))
    assert models.spec_token(CUSTOM) != models.spec_token(REGISTERED)
    moved = replace(REGISTERED, weights=replace(REGISTERED.weights, revision="0" * 40))
    assert models.spec_token(moved) != models.spec_token(REGISTERED)  # the weights record counts too


def test_a_spec_finds_its_loader_by_name_then_family():
    from eoembed.models.presto import load_presto

    bare = replace(REGISTERED, loader=None)
    assert registry.get_loader(bare) is load_presto  # by name
    assert registry.get_loader(replace(bare, name="presto-mine")) is load_presto  # the family's one loader
    stranger = replace(bare, name="mystery", family="mystery")
    with pytest.raises(UnknownModelError, match="loader=") as err:
        registry.get_loader(stranger)
    assert "register_model" in str(err.value)
    carried = replace(stranger, loader=load_presto)
    assert registry.with_loader(carried) is carried and registry.get_loader(carried) is load_presto


def test_register_model_maps_a_name_to_its_spec_and_loader(monkeypatch):
    from eoembed.models.spectral import load_spectral

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    plain = replace(models.get_model_spec("spectral"), name="stats", family="stats", aliases=("st",), loader=None)
    with pytest.raises(ValueError, match="needs a loader"):
        registry.register_model(plain)
    got = registry.register_model(plain, load_spectral)
    assert got.loader is load_spectral and models.get_model_spec("ST") is got
    assert models.list_models("stat*") == ["stats"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model(replace(plain, aliases=()), load_spectral)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model(replace(plain, name="other", aliases=("spectral",)), load_spectral)
    assert "other" not in models.list_models()  # a refused registration leaves nothing behind


def test_attrs_say_when_the_spec_is_not_the_registered_one(cube, presto_ckpt):
    def attrs(spec):
        return eoembed.embed(cube, spec, weights=presto_ckpt, progress=False, **EMBED_KW).attrs

    assert "eoembed:model_spec" not in attrs("presto")
    assert "eoembed:model_spec" not in attrs(replace(REGISTERED, loader=None))  # equal to the registered one
    custom = attrs(CUSTOM)
    assert custom["eoembed:model"] == "presto"
    assert custom["eoembed:model_spec"] == "modified: num_heads (not the registered presto)"
    assert attrs(UNREGISTERED)["eoembed:model_spec"] == "unregistered spec"


def test_spec_token_leaves_dask_config_alone_under_threads():
    """Concurrent model loads on dask worker threads must not leave tokenize.ensure-deterministic switched on."""
    import threading

    import dask

    from eoembed.models import get_model_spec, spec_token

    spec = get_model_spec("spectral")
    before = dask.config.get("tokenize.ensure-deterministic", None)
    threads = [threading.Thread(target=lambda: [spec_token(spec) for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dask.config.get("tokenize.ensure-deterministic", None) == before


def test_spec_token_refuses_an_untokenizable_loader():
    import dataclasses

    from eoembed.exceptions import ParameterError
    from eoembed.models import get_model_spec, spec_token

    import threading

    class Loader:  # holds a lock: unpicklable, so dask can only tokenize it by a random id
        def __init__(self):
            self.lock = threading.Lock()

        def __call__(self, *a, **k):
            raise AssertionError

    spec = dataclasses.replace(get_model_spec("spectral"), loader=Loader())
    with pytest.raises(ParameterError, match="tokenized deterministically"):
        spec_token(spec)
