"""Command line: ``eoembed models | cost | embed | verify | index | demo | fetch``.

Errors eoembed raises on purpose are printed as one actionable line (exit code 2);
anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eoembed.exceptions import EOEmbedError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="model name (see `eoembed models`); default tiny (demo: galileo-nano)")
    p.add_argument("--weights", default=None, help="weights folder (the model's published files) or checkpoint file")
    p.add_argument("--patch-size", type=int, default=None, help="pixels per patch (default: the model's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")


def _cmd_models(args) -> int:
    from eoembed.models import get_model_spec, list_models

    specs = [get_model_spec(n) for n in list_models(args.filter)]
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=1))
        return 0
    print(f"{'name':22} {'aliases':26} {'dim':>4} {'max T':>5} {'bands':27} {'licence':27} weights")
    for s in specs:
        bands = "+".join(f"{m.split('_')[0].replace('sentinel', 'S')}({len(b)})" for m, b in s.modalities.items())
        print(f"{s.name:22} {','.join(s.aliases):26} {str(s.embedding_dim or 'var'):>4} "
              f"{s.max_timesteps:>5} {bands:27} {s.license.split(' (')[0]:27} {s.weights_source}")
    return 0


def _cmd_cost(args) -> int:
    from eoembed.data import open_cube
    from eoembed.embed import embed_cost

    cost = embed_cost(open_cube(args.input), args.model, patch_size=args.patch_size)
    print(json.dumps(cost, indent=1))
    return 0


def _cmd_embed(args) -> int:
    from eoembed.data import open_cube
    from eoembed.embed import embed
    from eoembed.io import save_embeddings, to_zarr

    out = Path(args.output)
    if out.exists() and not (args.overwrite or args.resume):  # check before spending minutes embedding
        print(f"error: {out} exists; pass --overwrite to replace it or --resume to continue it "
              "(nothing was changed).", file=sys.stderr)
        return 2
    streamed = args.lazy or args.resume or args.cluster
    if streamed and out.suffix in (".nc", ".nc4"):
        print("error: --lazy/--resume/--cluster write a Zarr store region by region; name the output "
              "OUTPUT.zarr.", file=sys.stderr)
        return 2
    client = None
    if args.cluster:
        from eoembed.exceptions import require

        distributed = require("distributed", "scale", "--cluster")
        client = distributed.Client(args.cluster)
    try:
        cube = open_cube(args.input, chunks={} if streamed else None)
        emb = embed(cube, args.model, weights=args.weights, patch_size=args.patch_size,
                    tile_size=args.tile_size, halo=args.halo, blend=args.blend, device=args.device,
                    position=args.position,
                    pool_time=not args.per_timestep, batch_size=args.batch_size)
        if streamed:
            info = to_zarr(emb, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
            how = f" ({info['written']} regions written, {info['skipped']} already done)"
        else:
            save_embeddings(emb, out, overwrite=args.overwrite)
            how = ""
    finally:
        if client is not None:
            client.close()
    print(f"wrote {out}: {dict(emb.sizes)} ({emb.attrs['eoembed:model']}, {emb.attrs['eoembed:license']}){how}")
    return 0


def _cmd_verify(args) -> int:
    from eoembed.io import verify

    rep = verify(args.path)
    if not rep["ok"]:
        from eoembed.exceptions import StoreIntegrityError

        raise StoreIntegrityError(rep["message"])
    print(f"ok: {rep['message']}")
    return 0


def _cmd_index(args) -> int:
    import logging
    import time

    from eoembed.index.saved import index_path, store_index
    from eoembed.io import open_embeddings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kwargs = {"kind": args.kind} if args.kind != "auto" else {}
    t0 = time.perf_counter()
    idx = store_index(open_embeddings(args.store), rebuild=args.rebuild, **kwargs)
    how = (f"loaded (still valid) in {idx.tuning['load_seconds']:.2f} s" if idx.tuning.get("build") == "loaded"
           else f"built in {idx.tuning['build_seconds']:.1f} s")
    print(f"{index_path(args.store)}: {idx.ntotal} patches, {idx.key}, {how} "
          f"({time.perf_counter() - t0:.1f} s in all)")
    return 0


def _cmd_demo(args) -> int:
    from eoembed.demo import run_demo

    summary = run_demo(sample=args.sample, weights=args.weights, model=args.model, out=args.out,
                       patch_size=args.patch_size, device=args.device, overwrite=args.overwrite)
    print(json.dumps(summary, indent=1, default=str))
    print(f"\npicture: {summary['picture']}\nembeddings: {summary['zarr']}")
    return 0


def _cmd_fetch(args) -> int:
    from eoembed.data import registry

    if args.list:
        rows = registry.describe()
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:{width}} {r['bytes'] / 1e6:6.2f} MB  {r['licence'].split(';')[0]:20} "
                  f"{r['local'] or 'not here: ' + r['url']}")
        return 0
    if not args.all and not args.names:
        print("error: name what to fetch (`eoembed fetch --list` lists the names) or pass --all.", file=sys.stderr)
        return 2
    got = registry.fetch(None if args.all else args.names, progressbar=sys.stderr.isatty())
    if args.json:
        print(json.dumps({k: str(v) for k, v in got.items()}, indent=1))
    else:
        for name, path in got.items():
            print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eoembed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the models")
    p.add_argument("filter", nargs="?", default="*", help="glob over names, e.g. '*v1.2*'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("cost", help="tokens, GMACs and area before embedding")
    p.add_argument("input")
    _add_model_args(p)
    p.set_defaults(func=_cmd_cost)

    p = sub.add_parser("embed", help="embed a cube file (GeoTIFF/COG, NetCDF, Zarr) into a Zarr store")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="OUTPUT.zarr (or .nc)")
    _add_model_args(p)
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--halo", type=int, default=None)
    p.add_argument("--blend", action=argparse.BooleanOptionalAction, default=None,
                   help="blend overlapping windows (default: the model family's)")
    p.add_argument("--position", choices=["auto", "neutral", "raw"], default="auto",
                   help="in-window positions: neutral (default for ViT families: every token at window "
                        "position (0, 0)) or the model's own (raw)")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per encoder call (default: by device)")
    p.add_argument("--per-timestep", action="store_true", help="one vector per patch and timestep")
    p.add_argument("--lazy", action="store_true", help="read, embed and write region by region with dask")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run into the same OUTPUT.zarr (finished regions are kept)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run on an existing dask.distributed scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("verify", help="check a store written by embed --lazy/--resume against its checksums")
    p.add_argument("path", help="the OUTPUT.zarr store")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("index", help="build a store's search index ahead of time and save it beside the store "
                                     "(STORE.index; explore(STORE) and emb.eo.index() reopen it)")
    p.add_argument("store", help="the STORE.zarr (or .nc)")
    p.add_argument("--kind", default="auto", help="auto | flat | hnsw | ivf | a FAISS factory string")
    p.add_argument("--rebuild", action="store_true", help="build even when the saved index is still valid")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("demo", help="embed a small real cube and save a PCA-RGB picture")
    p.add_argument("--sample", default=None,
                   help="a cube file (default: the registered WorldCereal sample, from ../shared or downloaded once)")
    p.add_argument("--out", default="eoembed-demo", help="output folder (default ./eoembed-demo)")
    p.add_argument("--overwrite", action="store_true")
    _add_model_args(p)
    p.set_defaults(func=_cmd_demo, model="galileo-nano")

    p = sub.add_parser("fetch", help="get the registered sample data and weights (mirror, cache or pinned download)",
                       description="Print the local path of each named sample file or group, downloading (SHA-256-"
                                   "checked, from the pinned upstream commit) what no local mirror or cache holds.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="a group (worldcereal, worldcereal-training, galileo-nano, presto, galileo-reference, "
                        "presto-reference) or GROUP/FILE")
    p.add_argument("--all", action="store_true", help="every group (14.2 MB)")
    p.add_argument("--list", action="store_true", help="list the registered files, their sources and local copies")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EOEmbedError as err:
        print(f"error ({type(err).__name__}): {' '.join(str(err).split())}", file=sys.stderr)  # one line
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
