"""The FAISS wrapper: one place that talks to FAISS (CPU/GPU copies, factory, search).

:class:`VectorStore` holds the CPU index (always: saving, appending, reconstructing)
and, when FAISS sees GPUs, a copy on all of them for search. Exact ``Flat`` search on
the CPU runs as a blocked numpy matmul + argpartition (:func:`numpy_topk`) over FAISS's
own vector store (zero-copy).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from eoembed.exceptions import ParameterError, require

__all__ = ["VectorStore", "faiss_module", "numpy_topk", "train_index"]


def faiss_module():
    """``faiss``, or :class:`~eoembed.exceptions.MissingOptionalDependency` naming the extra."""
    return require("faiss", "search", "Similarity search (eoembed.index)")


def numpy_topk(X: np.ndarray, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of ``Q`` against ``X`` (rows), best first; pads with -1/-inf."""
    n = len(X)
    kk = min(k, n)
    bs = max(4096, (1 << 24) // max(len(Q), 1))  # ≤ 64 MB of scores per block
    S, I = [], []
    for i in range(0, n, bs):
        s = Q @ X[i:i + bs].T
        kb = min(kk, s.shape[1])
        p = np.argpartition(-s, kb - 1, axis=1)[:, :kb] if kb < s.shape[1] else np.broadcast_to(
            np.arange(s.shape[1]), s.shape)
        S.append(np.take_along_axis(s, p, axis=1))
        I.append(p + i)
    S, I = np.concatenate(S, axis=1), np.concatenate(I, axis=1)
    if S.shape[1] > kk:
        p = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        S, I = np.take_along_axis(S, p, axis=1), np.take_along_axis(I, p, axis=1)
    o = np.argsort(-S, axis=1, kind="stable")
    S, I = np.take_along_axis(S, o, axis=1), np.take_along_axis(I, o, axis=1).astype(np.int64)
    if kk < k:
        S = np.pad(S, ((0, 0), (0, k - kk)), constant_values=-np.inf)
        I = np.pad(I, ((0, 0), (0, k - kk)), constant_values=-1)
    return S.astype(np.float32), I


def _flat_view(index: Any) -> np.ndarray:
    """Zero-copy ``(ntotal, d)`` view of an ``IndexFlat``'s vectors."""
    faiss = faiss_module()
    n, d = index.ntotal, index.d
    return faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)


def _enable_reconstruct(index: Any) -> None:
    faiss = faiss_module()
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.make_direct_map()


def train_index(key: str, data: np.ndarray, *, seed: int = 0) -> Any:
    """A FAISS index (inner product) for factory ``key``, trained on a sample of ``data``
    (nothing added); IVF indexes keep a direct map so vectors can be reconstructed."""
    faiss = faiss_module()
    n, d = data.shape
    from eoembed.validate import check_faiss_key

    index = check_faiss_key(key, d)  # builds it (once), or a ParameterError for a key FAISS refuses
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        nlist = faiss.extract_index_ivf(index).nlist if "IVF" in key else 256
        if nlist > n:
            raise ParameterError(f"Index {key!r} needs at least {nlist} vectors to train; the cube has {n}.")
        ntrain = min(n, max(64 * nlist, 10_000))
        train = data[np.sort(rng.choice(n, size=ntrain, replace=False))] if ntrain < n else data
        try:
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.niter = 10
            ivf.cp.max_points_per_centroid = 64
        except RuntimeError:
            pass
        index.train(train)
    if "IVF" in key:
        faiss.extract_index_ivf(index).set_direct_map_type(faiss.DirectMap.Array)
    return index


class VectorStore:
    """A FAISS index on the CPU plus, when available, its copy on all GPUs.

    Attributes
    ----------
    key: FAISS factory string. params: search parameters (``nprobe``/``efSearch``).
    device: ``"cpu"`` or ``"cuda×N"``.
    """

    #: Exact ``Flat`` search on the CPU runs as a blocked numpy matmul + argpartition over
    #: FAISS's own vector store (zero-copy): same results, measured 2-3x faster than
    #: ``IndexFlatIP.search`` for k=100 on 2 cores (benchmarks/bench_search.py). Set to
    #: False to use FAISS.
    numpy_flat: bool = True

    def __init__(self, cpu_index: Any, *, key: str, params: dict[str, Any], device: str = "auto") -> None:
        self.cpu = cpu_index
        self.key = key
        self.params = dict(params)
        self.gpu = None
        self.device = "cpu"
        self.set_device(device)

    @property
    def ntotal(self) -> int:
        return int(self.cpu.ntotal)

    @property
    def dim(self) -> int:
        return int(self.cpu.d)

    def set_device(self, device: str) -> None:
        faiss = faiss_module()
        if device not in ("auto", "cpu", "cuda", "gpu"):
            raise ParameterError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}.")
        ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if device in ("cuda", "gpu") and ngpu == 0:
            raise ParameterError(
                "device='cuda' but FAISS sees no GPU (faiss-cpu installed, or no CUDA device). "
                "Install faiss-gpu (see eoembed.index docs) or use device='auto'/'cpu'."
            )
        self.gpu = None
        self.device = "cpu"
        if device != "cpu" and ngpu > 0 and not self.key.startswith("HNSW"):
            self.gpu = faiss.index_cpu_to_all_gpus(self.cpu)  # pragma: no cover - needs GPU
            self.device = f"cuda×{ngpu}"  # pragma: no cover
            self.apply_params()  # pragma: no cover

    def apply_params(self) -> None:
        faiss = faiss_module()
        for name, value in self.params.items():
            if self.gpu is not None:  # pragma: no cover - needs GPU
                faiss.GpuParameterSpace().set_index_parameter(self.gpu, name, value)
            faiss.ParameterSpace().set_index_parameter(self.cpu, name, value)

    def add(self, vectors: np.ndarray) -> None:
        if len(vectors):
            self.cpu.add(vectors)
            if self.gpu is not None:  # pragma: no cover - needs GPU
                self.gpu.add(vectors)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of shape ``(m, k)``, best first (id -1 = none)."""
        v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        if self.ntotal == 0:
            return np.full((len(v), k), np.nan, np.float32), np.full((len(v), k), -1, np.int64)
        if self.gpu is None and self.key == "Flat" and self.numpy_flat:
            return numpy_topk(_flat_view(self.cpu), v, int(k))
        return (self.gpu if self.gpu is not None else self.cpu).search(v, int(k))

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of ``ids`` (exact for Flat/HNSW/IVF-Flat; approximate for SQ/PQ)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self.cpu.reconstruct_batch(ids), dtype=np.float32)

    def write(self, path: str) -> None:
        faiss_module().write_index(self.cpu, os.path.join(path, "index.faiss"))

    @classmethod
    def read(cls, path: str, *, key: str, params: dict[str, Any], device: str = "auto") -> "VectorStore":
        cpu = faiss_module().read_index(os.path.join(path, "index.faiss"))
        _enable_reconstruct(cpu)
        store = cls(cpu, key=key, params=params, device="cpu")
        store.apply_params()
        store.set_device(device)
        return store
