"""Local files every layer verifies: the SHA-256 of a file and the weights cache folder.

At the bottom of the package (the sample registry in ``eoembed.data`` and the model
weights in ``eoembed.models`` both use them), so neither imports the other.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["sha256_file", "weights_cache_dir"]


def weights_cache_dir() -> Path:
    """``$EOEMBED_WEIGHTS_DIR`` or ``~/.cache/eoembed/weights``."""
    env = os.environ.get("EOEMBED_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eoembed" / "weights"


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks.

    Remembered per (path, size, mtime) within the process: every dask block resolves the
    weights again, and hashing a 1 GB checkpoint each time would cost seconds per block.
    """
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]
