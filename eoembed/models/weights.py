"""Finding, downloading, verifying and reading checkpoints safely.

A model's weights record (``spec.weights``, a :class:`~eoembed.models.registry.PretrainedWeights`:
repository, pinned revision, licence) lists its published files
(:class:`~eoembed.models.registry.WeightFile`: name, role, expected SHA-256, pinned URL).
They are searched in this order:

1. ``weights=PATH`` given by the user: a folder holding the files, or the checkpoint
   file itself (other files are looked for beside it). Files are hashed and the hashes
   stamped; a file that differs from the published one (e.g. your own fine-tuned
   weights) is accepted and marked unverified, never refused.
2. ``$EOEMBED_WEIGHTS_DIR/<name>/`` (default ``~/.cache/eoembed/weights``), where
   downloads go and where you can put files by hand. Verified against the published
   SHA-256: a mismatch is refused.
3. Hugging Face's own cache (``hf_hub_download(local_files_only=True)``) for models
   published there, verified the same way.
4. A download at the pinned revision (Hugging Face, or a pinned GitHub raw URL),
   SHA-256-checked before it is kept, unless ``EOEMBED_OFFLINE=1`` or
   ``HF_HUB_OFFLINE=1``. An unreachable server is detected with one short attempt,
   so an offline machine gets the error in seconds, not after retries.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: a file that
holds pickled Python objects is refused.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from eoembed._files import sha256_file, weights_cache_dir  # noqa: F401  (re-exported)
from eoembed.exceptions import (
    CorruptWeightsError,
    NetworkUnavailableError,
    UnsafeWeightsError,
    WeightsHashMismatchError,
    WeightsNotFoundError,
)
from eoembed.models.registry import ModelSpec, WeightFile, spec_origin

log = logging.getLogger("eoembed.weights")

CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "weights.pth"
#: Seconds to wait for a server before calling it unreachable (one attempt).
PROBE_TIMEOUT_S = 3.0
#: Seconds without data before a download is abandoned.
DOWNLOAD_TIMEOUT_S = 30.0


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on")
               for k in ("EOEMBED_OFFLINE", "HF_HUB_OFFLINE"))




def _files(spec: ModelSpec) -> tuple[WeightFile, ...]:
    """The spec's published files (OlmoEarth-style defaults when it lists none)."""
    if spec.weight_files:
        return spec.weight_files
    return (WeightFile(CONFIG_FILENAME, role="config", required=False), WeightFile(WEIGHTS_FILENAME))


def _main_file(spec: ModelSpec) -> WeightFile:
    return next(f for f in _files(spec) if f.role == "weights")


@dataclass(frozen=True)
class WeightsSource:
    """Where a checkpoint was found, and what its files hash to.

    Attributes
    ----------
    files:
        File name → path, for every file found.
    origin:
        ``"user"``, ``"cache"``, ``"huggingface"`` or ``"download"``.
    revision:
        The pinned revision when the files are (or were verified to be) the published
        ones, else ``"local:<path>"``.
    hashes:
        File name → SHA-256 of the file used.
    verified:
        True when every file with a published hash matched it.
    main:
        Name of the state-dict file.
    """

    files: dict[str, Path]
    origin: str
    revision: str
    hashes: dict[str, str] = field(default_factory=dict)
    verified: bool = False
    main: str = WEIGHTS_FILENAME

    @property
    def weights(self) -> Path:
        """Path of the state-dict file."""
        return self.files[self.main]

    @property
    def config(self) -> Path | None:
        return self.files.get(CONFIG_FILENAME)

    def path(self, name: str) -> Path | None:
        return self.files.get(name)

    def sha256(self) -> str:
        """SHA-256 of the state-dict file."""
        return self.hashes.get(self.main) or sha256_file(self.weights)


def _how_to_get(spec: ModelSpec) -> str:
    folder = weights_cache_dir() / spec.cache_dirname
    names = " and ".join(f.name for f in _files(spec) if f.required)
    if spec.hf_repo:
        base = f"https://huggingface.co/{spec.hf_repo}/resolve/{spec.hf_revision}"
        where = f"Download {' and '.join(f'{base}/{f.name}' for f in _files(spec))}"
    else:
        urls = [f.url for f in _files(spec) if f.url]
        where = f"Download {', '.join(urls)}" if urls else f"Get {names} for {spec.name}"
    return (
        f"{where} into {folder}/ (or set EOEMBED_WEIGHTS_DIR), or pass weights='/path/to/folder' "
        f"(a folder with {names}) to embed()/load_model() or --weights on the command line."
    )


def _mismatch(spec: ModelSpec, wf: WeightFile, path: Path, got: str, fix: str) -> WeightsHashMismatchError:
    return WeightsHashMismatchError(
        f"{path} has SHA-256 {got}, but {spec.name}'s published {wf.name} at "
        f"{spec.source_repo}@{spec.source_revision} has SHA-256 {wf.sha256}. The file is corrupt, "
        f"incomplete or not the published one. {fix}"
    )


def _hash_all(spec: ModelSpec, found: dict[str, Path], *, refuse: bool, fix: str = "") -> tuple[dict, bool]:
    """Hash every found file; with ``refuse`` a published-hash mismatch raises."""
    hashes, verified = {}, True
    for wf in _files(spec):
        if wf.name not in found:
            continue
        got = sha256_file(found[wf.name])
        hashes[wf.name] = got
        if wf.sha256 is not None and got != wf.sha256:
            if refuse:
                raise _mismatch(spec, wf, found[wf.name], got, fix)
            verified = False
    return hashes, verified


def _from_user(spec: ModelSpec, path: Path) -> WeightsSource:
    main = _main_file(spec)
    if path.is_dir():
        folder, main_path = path, path / main.name
        if not main_path.is_file():
            raise WeightsNotFoundError(
                f"weights={str(path)!r} is a folder without {main.name}. It must hold "
                f"{', '.join(f.name for f in _files(spec) if f.required)} as published for {spec.name}. "
                + _how_to_get(spec)
            )
    elif path.is_file():
        folder, main_path = path.parent, path
    else:
        raise WeightsNotFoundError(f"weights={str(path)!r} does not exist. " + _how_to_get(spec))
    found = {main.name: main_path}
    for wf in _files(spec):
        if wf.role != "weights" and (folder / wf.name).is_file():
            found[wf.name] = folder / wf.name
    missing = [wf.name for wf in _files(spec) if wf.required and wf.name not in found]
    if missing:
        raise WeightsNotFoundError(
            f"{folder} lacks {', '.join(missing)}, which {spec.name} needs beside {main.name}. "
            + _how_to_get(spec)
        )
    hashes, verified = _hash_all(spec, found, refuse=False)
    known = any(wf.sha256 for wf in _files(spec) if wf.name in found)
    revision = spec.source_revision if (verified and known) else f"local:{path}"
    return WeightsSource(found, "user", revision, hashes, verified and known, main.name)


def _complete(folder: Path, spec: ModelSpec) -> dict[str, Path] | None:
    found = {wf.name: folder / wf.name for wf in _files(spec) if (folder / wf.name).is_file()}
    if all(wf.name in found for wf in _files(spec) if wf.required):
        return found
    return None


def resolve_weights(spec: ModelSpec, weights: str | os.PathLike | None = None) -> WeightsSource:
    """Find (or download) the checkpoint for ``spec`` (see the module docstring for the order).

    Raises
    ------
    WeightsNotFoundError
        Saying exactly what to download and where to put it
        (:class:`NetworkUnavailableError` when the server cannot be reached).
    WeightsHashMismatchError
        A cached or downloaded file is not the published one (names both hashes).
    """
    if weights is not None:
        log.info("%s: using the weights given at %s", spec.name, weights)
        return _from_user(spec, Path(weights).expanduser())

    main = _main_file(spec).name
    folder = weights_cache_dir() / spec.cache_dirname
    found = _complete(folder, spec)
    if found is not None:
        hashes, _ = _hash_all(spec, found, refuse=True,
                              fix=f"Delete {folder} and run again to download it, or pass weights=PATH.")
        verified = any(wf.sha256 for wf in _files(spec))
        log.info("%s: cache hit in %s (verified: %s)", spec.name, folder, verified)
        return WeightsSource(found, "cache", spec.source_revision or "unknown", hashes, verified, main)

    if spec.hf_repo:
        found = _hf_files(spec, local_only=True)
        if found is not None:
            hashes, _ = _hash_all(spec, found, refuse=True, fix=_hf_fix(spec))
            log.info("%s: cache hit in the Hugging Face cache (%s)", spec.name, spec.hf_repo)
            return WeightsSource(found, "huggingface", spec.hf_revision, hashes, _has_hashes(spec), main)

    if _offline():
        raise WeightsNotFoundError(
            f"No local weights for {spec.name} and downloads are disabled "
            "(EOEMBED_OFFLINE/HF_HUB_OFFLINE). " + _how_to_get(spec)
        )
    if spec.hf_repo:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        _require_reachable(endpoint, spec)
        log.info("%s: downloading from Hugging Face %s@%s", spec.name, spec.hf_repo, spec.hf_revision[:10])
        try:
            found = _hf_files(spec, local_only=False)
        except Exception as err:  # network errors come in many types
            raise WeightsNotFoundError(
                f"Could not download {spec.name} weights from Hugging Face "
                f"({spec.hf_repo}@{spec.hf_revision[:10]}): {type(err).__name__}: {_first_line(str(err))}. "
                + _how_to_get(spec)
            ) from err
        hashes, _ = _hash_all(spec, found, refuse=True, fix=_hf_fix(spec))
        return WeightsSource(found, "huggingface", spec.hf_revision, hashes, _has_hashes(spec), main)

    files = [wf for wf in _files(spec) if wf.url]
    if not files:
        raise WeightsNotFoundError(f"No weights found for {spec.name}. " + _how_to_get(spec))
    folder.mkdir(parents=True, exist_ok=True)
    for wf in files:
        dest = folder / wf.name
        if dest.is_file():
            continue
        download_pinned(wf.url, dest, sha256=wf.sha256, what=f"{spec.name} {wf.name}")
    found = _complete(folder, spec)
    if found is None:
        raise WeightsNotFoundError(f"Downloading {spec.name} did not give every file. " + _how_to_get(spec))
    hashes, _ = _hash_all(spec, found, refuse=True, fix=f"Delete {folder} and run again.")
    return WeightsSource(found, "download", spec.source_revision or "unknown", hashes, _has_hashes(spec), main)


def _has_hashes(spec: ModelSpec) -> bool:
    return any(wf.sha256 for wf in _files(spec))


def _hf_fix(spec: ModelSpec) -> str:
    return (f"Delete the {spec.hf_repo} folder of the Hugging Face cache (huggingface-cli delete-cache) "
            "and run again, or pass weights=PATH.")


def _hf_files(spec: ModelSpec, *, local_only: bool) -> dict[str, Path] | None:
    """The spec's files from Hugging Face's cache (``local_only``) or a download."""
    from huggingface_hub import hf_hub_download

    found = {}
    for wf in _files(spec):
        try:
            found[wf.name] = Path(hf_hub_download(repo_id=spec.hf_repo, filename=wf.name,
                                                  revision=spec.hf_revision, local_files_only=local_only))
        except Exception:
            if local_only and wf.required:
                return None
            if not local_only:
                raise
    return found


def _require_reachable(url: str, spec: ModelSpec) -> None:
    """One quick request to ``url``; raise :class:`NetworkUnavailableError` when it fails."""
    if not _reachable(url):
        raise NetworkUnavailableError(
            f"Cannot reach {url} (no network, a firewall, or HF_ENDPOINT is wrong; one try with a "
            f"{PROBE_TIMEOUT_S:g} s timeout), so {spec.name} weights cannot be downloaded. "
            + _how_to_get(spec)
            + " Set HF_HUB_OFFLINE=1 to skip the attempt."
        )


def _reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a server answers at ``url`` (any HTTP status counts as reachable)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def download_pinned(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
                    timeout: float = DOWNLOAD_TIMEOUT_S, what: str = "file") -> Path:
    """Download ``url`` to ``dest``, checking its length and SHA-256 before keeping it.

    Goes through eoembed's one downloader (:func:`eoembed.data.registry.download`, pooch): the file is
    written beside ``dest`` under a temporary name and moved in place only when complete and verified,
    so an interrupted or wrong download never becomes a cache hit. ``file://`` URLs work too (tests,
    mirrors). The download errors are raised as the weights errors below (each is also the matching
    builtin, as before).

    Raises
    ------
    NetworkUnavailableError
        The server cannot be reached (one attempt, ``timeout`` seconds).
    WeightsNotFoundError
        The server answers with an error (e.g. 404).
    CorruptWeightsError
        Fewer bytes arrived than announced.
    WeightsHashMismatchError
        The bytes are not the published file (names both hashes).
    """
    from eoembed.data.registry import download
    from eoembed.exceptions import (
        DownloadHashMismatchError,
        DownloadIncompleteError,
        DownloadNotFoundError,
        DownloadUnreachableError,
    )

    dest = Path(dest)
    log.info("downloading %s from %s to %s", what, url, dest)
    fix = "Download the file by hand and pass weights=PATH."
    try:
        path = download(url, dest, sha256=sha256, what=what, fix=fix, timeout=timeout)
    except DownloadHashMismatchError as err:
        raise WeightsHashMismatchError(str(err)) from err
    except DownloadIncompleteError as err:
        raise CorruptWeightsError(str(err)) from err
    except DownloadNotFoundError as err:
        raise WeightsNotFoundError(str(err)) from err
    except DownloadUnreachableError as err:
        raise NetworkUnavailableError(str(err)) from err
    log.info("downloaded %s: %d bytes, SHA-256 %s", what, path.stat().st_size, sha256_file(path))
    return path


def provenance_attrs(spec: ModelSpec, source: WeightsSource | None, device: str) -> dict:
    """The attrs every embedding made with ``spec`` carries (model, weights, licence)."""
    attrs = {
        "eoembed:model": spec.name,
        "eoembed:model_family": spec.family,
        "eoembed:model_version": spec.version,
    }
    if source is None:
        attrs["eoembed:weights_revision"] = "none"
    else:
        attrs.update({
            "eoembed:weights_repo": spec.source_repo or "",
            "eoembed:weights_revision": source.revision,
            "eoembed:weights_origin": source.origin,
            "eoembed:weights_sha256": source.sha256(),
            "eoembed:weights_verified": int(bool(source.verified)),
        })
    attrs["eoembed:license"] = spec.license
    origin = spec_origin(spec)
    if origin:  # the name alone would say the registered model
        attrs["eoembed:model_spec"] = f"{origin} (not the registered {spec.name})" if origin != "unregistered" \
            else "unregistered spec"
    attrs["eoembed:device"] = device
    from eoembed.models._torchcommon import autocast_dtype  # here: _torchcommon imports this module

    amp = autocast_dtype(device, spec.family)
    attrs["eoembed:precision"] = f"{amp} autocast" if amp else "float32"
    return attrs


def load_state_dict(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True``; typed errors for bad files."""
    import pickle

    import torch

    if path.stat().st_size == 0:
        raise CorruptWeightsError(f"{path} is empty (0 bytes); download it again.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "global" in text.lower() or "unsupported" in text.lower():
            raise UnsafeWeightsError(
                f"{path} holds pickled Python objects that torch.load(weights_only=True) refuses "
                f"({_first_line(text)}). eoembed only loads plain tensor state dicts. Re-save it "
                "with torch.save(model.state_dict(), path), or download the published file."
            ) from err
        raise _corrupt(path, err) from err
    except Exception as err:  # truncated zip, garbage bytes, legacy pickles: all unreadable
        raise _corrupt(path, err) from err
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CorruptWeightsError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return state


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


def _corrupt(path: Path, err: BaseException) -> CorruptWeightsError:
    return CorruptWeightsError(
        f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {_first_line(str(err))}). "
        "The download may be incomplete; delete it and download it again."
    )
