"""Georeferenced similarity search over embedding cubes (FAISS).

Every valid patch vector of an embedding cube becomes one entry of a FAISS index;
the index remembers where each entry came from (source cube, time, row/col, patch
centre x/y in the index CRS), the CRS and the model, so that a query can be a map
point, a patch, a polygon, a raw vector or a set of positive/negative examples and
the answer is a table of georeferenced hits or a similarity map on the cube grid.

Vectors are L2-normalised and compared with inner product, i.e. cosine similarity
(``metric="cosine"``, default). The index type is chosen by :func:`choose_index_key`:
exact ``Flat`` for small collections, HNSW or IVF above a size threshold, with the
search parameters (``efSearch``/``nprobe``) tuned at build time to reach a target
recall@10 against exact search (0.95 by default), measured on a sample of queries.

Layout (one job per module):

* :mod:`~eoembed.index.choice` — index choice, tuning, recall (pure; autofaiss's split);
* :mod:`~eoembed.index.entries` — the entry table (where each vector came from) + save/load;
* :mod:`~eoembed.index.query` — :class:`Query` and its resolution to one vector;
* :mod:`~eoembed.index.backend` — the FAISS wrapper (CPU/GPU copies, numpy top-k);
* :mod:`~eoembed.index.similarity` — similarity maps (no FAISS needed);
* :mod:`~eoembed.index.core` — :class:`EmbeddingIndex` and :func:`build_index`.

Installing FAISS
----------------
The ``search`` extra installs the CPU build: ``pip install 'eoembed[search]'``
(``faiss-cpu`` from PyPI). For NVIDIA GPUs install a GPU build instead of
``faiss-cpu`` — ``conda install -c pytorch -c nvidia faiss-gpu`` (or the
``faiss-gpu-cu12`` wheel) — and do not install both in one environment. When
``faiss.get_num_gpus() > 0`` and ``device`` is ``"auto"`` or ``"cuda"``, Flat and
IVF indexes are copied to all GPUs with ``faiss.index_cpu_to_all_gpus`` for search;
HNSW has no GPU implementation and stays on the CPU. A CPU copy is always kept
(for saving, appending and looking up stored vectors).

Saving
------
``idx.save(dir)`` writes ``dir/index.faiss`` (the CPU index), ``dir/meta.json``
(key, metric, search parameters, CRS WKT, model identity and cube attrs, sources)
and ``dir/entries.npz`` (per-entry source/time/row/col/x/y and per-source times).
:meth:`EmbeddingIndex.load` restores all of it.
"""

from eoembed.index.choice import choose_index_key, nb_clusters, recall_at_k
from eoembed.index.core import EmbeddingIndex, build_index
from eoembed.index.query import Query
from eoembed.index.similarity import similarity_map

__all__ = [
    "EmbeddingIndex",
    "Query",
    "build_index",
    "choose_index_key",
    "nb_clusters",
    "similarity_map",
    "recall_at_k",
]
