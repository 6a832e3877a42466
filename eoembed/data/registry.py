"""The files the demo, tutorials and tests use, where they come from, and a verified local copy of each.

Every file has an upstream URL at a pinned commit, a SHA-256 and a licence (:data:`REGISTRY`).
:func:`sample` returns a local path to a file (``"worldcereal/worldcereal_preprocessed_inputs.nc"``)
or to a folder holding a whole group (``"worldcereal-training"``, ``"galileo-nano"``), looked for
in this order:

1. **a local mirror**, a folder laid out as the project's ``shared/`` folder
   (``data/worldcereal/…``, ``data/worldcereal-training/…``, ``weights/galileo-nano/…``,
   ``weights/presto/…``, ``reference/…``): the folders in ``$EOEMBED_DATA_MIRROR``
   (``os.pathsep``-separated; set, it replaces the default, set empty it disables mirrors),
   else ``../shared`` beside a source checkout of eoembed. A mirror file is used in place
   (nothing is copied or downloaded) after its SHA-256 is checked; a file that differs is
   refused (:class:`~eoembed.exceptions.DownloadHashMismatchError`);
2. **the cache**: ``$EOEMBED_DATA_DIR`` (default ``~/.cache/eoembed/data``) for data and test
   oracles, the weights cache ``$EOEMBED_WEIGHTS_DIR/<model>/`` (default
   ``~/.cache/eoembed/weights``) for model weights, where :func:`eoembed.load_model` finds them;
3. **a download** with :mod:`pooch` from ``raw.githubusercontent.com`` at the pinned commit
   (``$EOEMBED_DATA_URL`` replaces that host, e.g. with a company mirror), SHA-256-checked
   before it is kept: a failed or wrong download leaves nothing in the cache. ``EOEMBED_OFFLINE=1``
   (or ``download=False``) turns downloads off.

The same files, commits and hashes are listed in ``docs/data.md``. ``eoembed fetch --all`` fetches
everything (14.2 MB).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from eoembed.exceptions import (
    DownloadError,
    DownloadHashMismatchError,
    DownloadIncompleteError,
    DownloadNotFoundError,
    DownloadUnreachableError,
    UnknownSampleError,
)

__all__ = ["RegistryFile", "Group", "REGISTRY", "GROUPS", "SAMPLE_CUBE", "sample", "fetch", "names", "mirrors",
           "data_cache_dir", "files_of", "download"]

log = logging.getLogger("eoembed.data.registry")

#: Host of the pinned upstream files (``$EOEMBED_DATA_URL`` replaces it).
RAW_BASE = "https://raw.githubusercontent.com"
#: Seconds to connect before a server counts as unreachable (an offline machine fails fast), and seconds
#: without data before a download is abandoned.
CONNECT_TIMEOUT_S = 5.0
TIMEOUT_S = 30.0

WORLDCEREAL = "WorldCereal/worldcereal-classification"
#: worldcereal-classification commit holding the sample cube, the crop-type map and the MIT LICENSE (2024-10-22).
WORLDCEREAL_COMMIT = "477ceb7d37f5ee30424b5bebdcf146e8531b124d"
#: the last commit with the labelled training extraction (deleted in 2023-10, 7e47e955).
WORLDCEREAL_TRAINING_COMMIT = "5db1e24d918f99e5b2471b826fbcb8fd2afea252"
GALILEO = "nasaharvest/galileo"
#: galileo commit whose files equal ../shared's (encoder.pt unchanged since d0482291; config.json and
#: normalization.json gained a final newline in this one).
GALILEO_COMMIT = "1dfb2f775feeb25d8b3b21b08a261fe94c657a82"
PRESTO = "nasaharvest/presto"
PRESTO_COMMIT = "13173d028f035abcbcc3b13829314323a5c15d02"

_WC_LICENCE = "MIT (ESA WorldCereal); contains modified Copernicus Sentinel data 2018-2021"
_TRAINING = "tests/worldcerealtests/testresources/worldcerealtraining/0000280849BAC91C"
_TRAINING_SUFFIX = "0000280849BAC91C_32631_2018-08-01_2019-11-30.nc"


@dataclass(frozen=True)
class RegistryFile:
    """One registered file.

    Attributes
    ----------
    group:
        The group it belongs to (``"worldcereal"``, ``"galileo-nano"``…).
    filename:
        Its name inside the group's folder.
    repo, commit, path:
        Where it is published: ``https://raw.githubusercontent.com/<repo>/<commit>/<path>``.
    sha256:
        SHA-256 of the published file (checked on every mirror hit and download).
    size:
        Bytes.
    licence:
        Licence of the file.
    """

    group: str
    filename: str
    repo: str
    commit: str
    path: str
    sha256: str
    size: int
    licence: str

    @property
    def name(self) -> str:
        """``"<group>/<filename>"``, the name :func:`sample` and ``eoembed fetch`` take."""
        return f"{self.group}/{self.filename}"

    @property
    def url(self) -> str:
        """The pinned upstream URL (``$EOEMBED_DATA_URL`` replaces the host)."""
        base = os.environ.get("EOEMBED_DATA_URL", "").rstrip("/") or RAW_BASE
        return f"{base}/{self.repo}/{self.commit}/{self.path}"


@dataclass(frozen=True)
class Group:
    """Files that live in one folder: in a mirror ``<mirror>/<mirror_dir>``, in the cache
    ``<data cache>/<group>`` or, for model weights (``weights=True``), ``<weights cache>/<group>``."""

    name: str
    mirror_dir: str
    description: str
    weights: bool = False


GROUPS: dict[str, Group] = {g.name: g for g in (
    Group("worldcereal", "data/worldcereal",
          "real Sentinel-2/Sentinel-1 sample cube, Belgium, 12 monthly composites 2020-11..2021-10, 100 x 100 px at "
          "10 m (the demo's input), and a crop-type map on the same grid"),
    Group("worldcereal-training", "data/worldcereal-training",
          "labelled WorldCereal extraction (Flanders, 64 x 64 px at 10 m, 2018-08..2019-11): S2 10/20 m, S1, "
          "Landsat 8 surface temperature, 2019 crop-type labels"),
    Group("galileo-nano", "weights/galileo-nano", "Galileo-Nano pretrained weights (NASA Harvest)", weights=True),
    Group("presto", "weights/presto", "Presto pretrained weights (NASA Harvest)", weights=True),
    Group("galileo-reference", "reference/galileo", "Galileo's single-file reference model (parity-test oracle)"),
    Group("presto-reference", "reference/presto", "Presto's single-file reference model (parity-test oracle)"),
)}

_ENTRIES = (
    RegistryFile("worldcereal", "worldcereal_preprocessed_inputs.nc", WORLDCEREAL, WORLDCEREAL_COMMIT,
                 "tests/worldcerealtests/testresources/worldcereal_preprocessed_inputs.nc",
                 "7b9361a2697fe77e79266eb7436eea2e898b101c52d40b85ef9c2b8cde51e909", 1239784, _WC_LICENCE),
    RegistryFile("worldcereal", "worldcereal_croptype_classification.nc", WORLDCEREAL, WORLDCEREAL_COMMIT,
                 "tests/worldcerealtests/testresources/worldcereal_croptype_classification.nc",
                 "9fa2b791e917bcac0a730209a2099f1098c39436f33d912b70a310f7c358470b", 209712, _WC_LICENCE),
    RegistryFile("worldcereal", "LICENSE", WORLDCEREAL, WORLDCEREAL_COMMIT, "LICENSE",
                 "40ae5515785e9f096c2f53958886476762bc62c7856dffda578f3820618488c4", 1072, "MIT"),
    *(RegistryFile("worldcereal-training", f"{stem}_{_TRAINING_SUFFIX}", WORLDCEREAL, WORLDCEREAL_TRAINING_COMMIT,
                   f"{_TRAINING}/{stem}_{_TRAINING_SUFFIX}", sha, size, _WC_LICENCE)
      for stem, sha, size in (
          ("L8_L2-ST_10m", "6548376ed508c869f974d7104db3082067724147d6ed47fb3c5a7b0daccf56c3", 1017272),
          ("OUTPUT_POLY-110_10m", "b41a731ddbf024cde5620af45344b5553a60254201e85181e93f71d5c4e2ec52", 49940),
          ("S1_GRD-ASCENDING_20m", "fdfe0cc454104e42dffe5d293dffe69b945e5c772a41532792b30386815974ce", 669104),
          ("S2_L2A_10m", "14be63581f7231a998c50b8c04ceaab60ad0b94d48e5c0c258bb79080322f8f2", 2376632),
          ("S2_L2A_20m", "00c693cd1d004d11c861a3658fc6e2df0fd31f38f5dce90d929f6c8b141e81eb", 993008),
      )),
    RegistryFile("worldcereal-training", "LICENSE", WORLDCEREAL, WORLDCEREAL_COMMIT, "LICENSE",
                 "40ae5515785e9f096c2f53958886476762bc62c7856dffda578f3820618488c4", 1072, "MIT"),
    RegistryFile("galileo-nano", "encoder.pt", GALILEO, GALILEO_COMMIT, "data/models/nano/encoder.pt",
                 "eab6acacf527886a508a555bc24efe4b4a2cf91b162e84cd1c4a1807e942180c", 4189406, "MIT (NASA Harvest)"),
    RegistryFile("galileo-nano", "config.json", GALILEO, GALILEO_COMMIT, "data/models/nano/config.json",
                 "8ec17cb83cb78d987b4b920b9c1c35aa245ec0f80e1abf0c22d6f77d828f431c", 2246, "MIT (NASA Harvest)"),
    RegistryFile("galileo-nano", "normalization.json", GALILEO, GALILEO_COMMIT, "config/normalization.json",
                 "baea3828a8750e0b570cb2fad5cd30bb249f1f001988d842cc4246860e799ff3", 2277, "MIT (NASA Harvest)"),
    RegistryFile("galileo-nano", "LICENSE", GALILEO, GALILEO_COMMIT, "LICENSE",
                 "be77d9965ce4fce0f874c34967c44a2a4d919035ec2299a35af15f996d5e46a6", 1071, "MIT"),
    RegistryFile("presto", "default_model.pt", PRESTO, PRESTO_COMMIT, "data/default_model.pt",
                 "559c9d76f525bdf2dd3774da8b1e7f1510769b73baacac12e9e4d8d5c67fbe65", 3321716, "MIT (NASA Harvest)"),
    RegistryFile("presto", "LICENSE", PRESTO, PRESTO_COMMIT, "LICENSE",
                 "be77d9965ce4fce0f874c34967c44a2a4d919035ec2299a35af15f996d5e46a6", 1071, "MIT"),
    RegistryFile("galileo-reference", "single_file_galileo.py", GALILEO, GALILEO_COMMIT, "single_file_galileo.py",
                 "a94a2c1ee6ce541a2b09dcdaab6b5b3bd4edbee6b0108aa8a01bfe7a6395888d", 50093, "MIT (NASA Harvest)"),
    RegistryFile("galileo-reference", "LICENSE", GALILEO, GALILEO_COMMIT, "LICENSE",
                 "be77d9965ce4fce0f874c34967c44a2a4d919035ec2299a35af15f996d5e46a6", 1071, "MIT"),
    RegistryFile("presto-reference", "single_file_presto.py", PRESTO, PRESTO_COMMIT, "single_file_presto.py",
                 "fb487a3a9ceb6040eaa8e97b9cd2dd9df8cb6c650ab889ac0868944ed55700df", 26516, "MIT (NASA Harvest)"),
    RegistryFile("presto-reference", "LICENSE", PRESTO, PRESTO_COMMIT, "LICENSE",
                 "be77d9965ce4fce0f874c34967c44a2a4d919035ec2299a35af15f996d5e46a6", 1071, "MIT"),
)
#: ``"<group>/<filename>"`` → :class:`RegistryFile`.
REGISTRY: dict[str, RegistryFile] = {f.name: f for f in _ENTRIES}
#: The demo's input: the 1 km² Sentinel-2/Sentinel-1 cube.
SAMPLE_CUBE = "worldcereal/worldcereal_preprocessed_inputs.nc"


# ---------------------------------------------------------------------------------------------------------------
# where
def data_cache_dir() -> Path:
    """``$EOEMBED_DATA_DIR`` or ``~/.cache/eoembed/data``."""
    env = os.environ.get("EOEMBED_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eoembed" / "data"


def _group_cache(group: Group) -> Path:
    if group.weights:
        from eoembed._files import weights_cache_dir  # one weights cache: resolve_weights reads it

        return weights_cache_dir() / group.name
    return data_cache_dir() / group.name


def mirrors() -> list[Path]:
    """The local mirror folders: ``$EOEMBED_DATA_MIRROR`` if set (``os.pathsep``-separated; empty: none),
    else ``../shared`` beside a source checkout of eoembed (when it exists)."""
    env = os.environ.get("EOEMBED_DATA_MIRROR")
    if env is not None:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    root = Path(__file__).resolve().parents[2]
    shared = root.parent / "shared"
    if (root / "pyproject.toml").is_file() and shared.is_dir():
        return [shared]
    return []


def _offline() -> bool:
    return os.environ.get("EOEMBED_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def names() -> list[str]:
    """Every name :func:`sample` takes: the groups, then ``"<group>/<file>"`` for every file."""
    return [*GROUPS, *REGISTRY]


def files_of(name: str) -> list[RegistryFile]:
    """The registered files a name stands for (one file, or a group's files)."""
    if name in REGISTRY:
        return [REGISTRY[name]]
    if name in GROUPS:
        return [f for f in _ENTRIES if f.group == name]
    import difflib

    close = difflib.get_close_matches(name, names(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownSampleError(
        f"No registered sample file or group is called {name!r}.{hint} `eoembed fetch --list` lists them "
        f"(groups: {', '.join(GROUPS)})."
    )


# ---------------------------------------------------------------------------------------------------------------
# verified local copies
def _verified_hash(path: Path) -> str:
    """SHA-256 of ``path``: the weights module's hash, remembered per (path, size, mtime) within the process,
    so the weights a sample() call verified are not hashed again when a model loads them."""
    from eoembed._files import sha256_file

    return sha256_file(path)


def _mirror_hit(entry: RegistryFile) -> Path | None:
    """The file in the first mirror that has it, checked against its SHA-256 (a mismatch raises)."""
    group = GROUPS[entry.group]
    for root in mirrors():
        cand = root / group.mirror_dir / entry.filename
        if cand.is_file():
            got = _verified_hash(cand)
            if got != entry.sha256:
                raise DownloadHashMismatchError(
                    f"The mirror copy {cand} of {entry.name} has SHA-256 {got}, but the file published at "
                    f"{entry.repo}@{entry.commit[:10]} ({entry.url}) has SHA-256 {entry.sha256}. Replace it with "
                    "the published file, or set EOEMBED_DATA_MIRROR to a folder without it (empty: no mirror) "
                    "to download it instead."
                )
            log.debug("%s: mirror hit %s", entry.name, cand)
            return cand
    return None


def _cached(entry: RegistryFile) -> Path | None:
    path = _group_cache(GROUPS[entry.group]) / entry.filename
    if path.is_file() and _verified_hash(path) == entry.sha256:
        return path
    return None


def _local(entry: RegistryFile) -> Path | None:
    return _mirror_hit(entry) or _cached(entry)


def _how_to_get(entry: RegistryFile) -> str:
    group = GROUPS[entry.group]
    return (f"Download {entry.url} (SHA-256 {entry.sha256}) into {_group_cache(group)}/, or run "
            f"`eoembed fetch {entry.group}` with internet, or point EOEMBED_DATA_MIRROR at a folder holding "
            f"{group.mirror_dir}/{entry.filename}.")


def _download(entry: RegistryFile, *, progressbar: bool = False) -> Path:
    """Fetch one registered file into its cache folder (:func:`download`)."""
    folder = _group_cache(GROUPS[entry.group])
    log.info("downloading %s from %s into %s", entry.name, entry.url, folder)
    path = download(entry.url, folder / entry.filename, sha256=entry.sha256, what=entry.name,
                    fix=_how_to_get(entry), size=entry.size, progressbar=progressbar)
    log.info("downloaded %s: %d bytes, SHA-256 %s", entry.name, path.stat().st_size, entry.sha256)
    return path


def _copy_file_url(url: str, output_file, pooch_obj=None) -> None:
    """A pooch downloader for ``file://`` URLs (local mirrors, tests): copies the file to pooch's temporary
    (a path, or an open binary file)."""
    from urllib.parse import unquote, urlsplit
    from urllib.request import url2pathname

    src = Path(url2pathname(unquote(urlsplit(url).path)))
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist")
    out = open(output_file, "wb") if isinstance(output_file, (str, os.PathLike)) else output_file  # noqa: SIM115
    try:
        with open(src, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                out.write(block)
    finally:
        if out is not output_file:
            out.close()


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, what: str = "file", fix: str = "",
             size: int | None = None, progressbar: bool = False,
             timeout: tuple[float, float] | float | None = None) -> Path:
    """The one downloader of eoembed: ``url`` to ``dest`` with :mod:`pooch`, SHA-256-checked before it is kept.

    Sample data, model weights (:func:`eoembed.models.weights.download_pinned`) and the producers' tile
    indexes (:mod:`eoembed.products.remote`) all come through here. pooch writes beside ``dest`` under a
    temporary name and moves the file in place only when complete and (with ``sha256``) verified, so a
    broken or wrong download never becomes a cache hit. ``http(s)://`` and ``ftp://`` as pooch fetches them;
    ``file://`` is copied the same way (local mirrors, tests). An existing ``dest`` with the right hash
    (or any existing ``dest`` when ``sha256`` is None) is returned as is.

    Raises
    ------
    DownloadNotFoundError
        The server answered with an error (HTTP 404…), or the ``file://`` path does not exist.
    DownloadUnreachableError
        The server cannot be reached (no network, firewall, wrong host).
    DownloadIncompleteError
        The transfer broke off (fewer bytes than announced).
    DownloadHashMismatchError
        The bytes are not the published file.
    """
    import pooch
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    how = f" {fix}" if fix else ""
    if url.startswith("file://"):
        downloader = _copy_file_url
    else:
        t = timeout if timeout is not None else (CONNECT_TIMEOUT_S, TIMEOUT_S)
        if isinstance(t, (int, float)):
            t = (min(CONNECT_TIMEOUT_S, float(t)), float(t))
        downloader = pooch.HTTPDownloader(progressbar=progressbar, timeout=t)
    plog = pooch.get_logger()
    level = plog.level
    plog.setLevel(logging.WARNING)  # eoembed logs downloads itself; pooch's known_hash advice is not for users
    try:
        return Path(pooch.retrieve(url, known_hash=f"sha256:{sha256}" if sha256 else None, fname=dest.name,
                                   path=dest.parent, downloader=downloader, progressbar=False))
    except FileNotFoundError as err:  # a file:// URL whose file is not there
        raise DownloadNotFoundError(f"{what}: {url} does not exist; nothing was kept.{how}") from err
    except requests.exceptions.HTTPError as err:
        status = getattr(err.response, "status_code", "?")
        raise DownloadNotFoundError(
            f"Downloading {what} from {url} failed: HTTP {status}. The pinned file is not (or no longer) "
            f"served there; nothing was kept.{how}"
        ) from err
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        text = str(err)
        if isinstance(err, requests.exceptions.ConnectionError) and _broke_off(err):
            raise DownloadIncompleteError(
                f"Downloading {what} from {url} broke off before the end ({_first_line(text)}); "
                f"nothing was kept. Run again.{how}"
            ) from err
        raise DownloadUnreachableError(
            f"Cannot reach {url} ({type(err).__name__}: {_first_line(text)}), so {what} cannot be "
            f"downloaded. Connect to the internet (or a proxy), or:{how or ' download it by hand.'}"
        ) from err
    except requests.exceptions.RequestException as err:  # ChunkedEncodingError, ContentDecodingError…
        raise DownloadIncompleteError(
            f"Downloading {what} from {url} broke off ({type(err).__name__}: {_first_line(str(err))}); "
            f"nothing was kept. Run again.{how}"
        ) from err
    except ValueError as err:  # pooch: the hash does not match
        if "hash" not in str(err).lower():
            raise
        raise DownloadHashMismatchError(
            f"{url} did not give the published {what}: {_first_line(str(err))} (expected SHA-256 "
            f"{sha256}{f', {size} bytes' if size else ''}). The download is corrupt or truncated, or the file "
            f"changed upstream; nothing was kept. Run again, or:{how or ' download it by hand.'}"
        ) from err
    finally:
        plog.setLevel(level)


def _broke_off(err: BaseException) -> bool:
    text = str(err)
    return any(s in text for s in ("IncompleteRead", "Connection broken", "ProtocolError"))


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def _resolve(entry: RegistryFile, *, download: bool | None, progressbar: bool) -> Path:
    path = _local(entry)
    if path is not None:
        return path
    if download is False or (download is None and _offline()):
        where = ", ".join(str(m) for m in mirrors()) or "none"
        raise DownloadUnreachableError(
            f"{entry.name} is not in a local mirror (mirrors: {where}) nor in the cache, and downloads are off "
            f"({'download=False' if download is False else 'EOEMBED_OFFLINE'}). {_how_to_get(entry)}"
        )
    return _download(entry, progressbar=progressbar)


def sample(name: str, *, download: bool | None = None, progressbar: bool = False) -> Path:
    """Local path of a registered file or group, from a mirror, the cache or a download.

    Parameters
    ----------
    name:
        ``"<group>/<file>"`` (e.g. :data:`SAMPLE_CUBE`) for one file, or a group name
        (``"worldcereal"``, ``"worldcereal-training"``, ``"galileo-nano"``, ``"presto"``,
        ``"galileo-reference"``, ``"presto-reference"``) for the folder holding all its files.
    download:
        ``None`` (default): download what is missing unless ``EOEMBED_OFFLINE=1``; ``False``: never.
    progressbar:
        Show a progress bar while downloading.

    Returns
    -------
    pathlib.Path
        The file, or the group's folder (a mirror folder when every file of the group is
        there and verified, else the cache folder after fetching what it lacks).

    Raises
    ------
    UnknownSampleError
        ``name`` is not registered (close names suggested).
    DownloadError
        :class:`~eoembed.exceptions.DownloadUnreachableError` (no network, or downloads off),
        :class:`~eoembed.exceptions.DownloadNotFoundError` (HTTP 404…),
        :class:`~eoembed.exceptions.DownloadIncompleteError` (broke off) or
        :class:`~eoembed.exceptions.DownloadHashMismatchError` (wrong bytes, in a download or a mirror);
        each names the URL, the SHA-256 and where to put the file by hand.

    Examples
    --------
    >>> cube = eoembed.open_cube(eoembed.data.sample("worldcereal/worldcereal_preprocessed_inputs.nc"))  # doctest: +SKIP
    >>> emb = cube.eo.embed(model="galileo-nano", weights=eoembed.data.sample("galileo-nano"))  # doctest: +SKIP
    """
    entries = files_of(name)
    if name in REGISTRY:
        return _resolve(entries[0], download=download, progressbar=progressbar)
    group = GROUPS[name]
    for root in mirrors():
        folder = root / group.mirror_dir
        if all((folder / e.filename).is_file() for e in entries):
            if all(_mirror_hit(e) == folder / e.filename for e in entries):  # each hash checked
                return folder
    folder = _group_cache(group)
    for e in entries:
        if _cached(e) is not None:
            continue
        if _mirror_hit(e) is not None:  # a group split over mirrors: copy the verified file into the cache
            _copy_from_mirror(e, folder)
        else:
            _resolve(e, download=download, progressbar=progressbar)
    return folder


def _copy_from_mirror(entry: RegistryFile, folder: Path) -> None:
    """A group split over mirrors: copy the verified mirror file into the group's cache folder."""
    import shutil
    import tempfile

    src = _mirror_hit(entry)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{entry.filename}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, folder / entry.filename)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fetch(which: Iterable[str] | None = None, *, download: bool | None = None,
          progressbar: bool = False) -> dict[str, Path]:
    """:func:`sample` for several names (every group when ``None``); returns name → local path."""
    chosen: Sequence[str] = list(GROUPS) if which is None else list(which)
    for n in chosen:
        files_of(n)  # unknown names fail before anything is downloaded
    return {n: sample(n, download=download, progressbar=progressbar) for n in chosen}


def describe() -> list[dict]:
    """One row per registered file: name, size, licence, URL, SHA-256 and where it is now (or ``None``)."""
    rows = []
    for e in _ENTRIES:
        try:
            here = _local(e)
        except DownloadError:
            here = None
        rows.append({"name": e.name, "bytes": e.size, "licence": e.licence, "url": e.url, "sha256": e.sha256,
                     "local": None if here is None else str(here)})
    return rows
