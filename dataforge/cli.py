"""The ``dataforge`` command: ``dataforge --version``, ``dataforge bench BENCHMARK [options]``,
``dataforge shards write SRC OUT [options]``, ``dataforge doctor TARGET [options]``.

Each benchmark takes only the options it uses (``dataforge bench samplers --help``
lists them); any other option is an error, not silently ignored. A run writes, in
its ``--out`` folder, one ``<benchmark>.json`` per benchmark it ran (the document
schema is in :mod:`dataforge.bench.report`), ``image.png`` / ``text.png`` for the
throughput benchmarks, and updates ``index.json``, which records for every file
the command and the time that wrote it: one folder can hold several runs and say
which made what. Bad input (a ``--data`` path of the wrong shape, ``--device cuda``
without a GPU, a negative worker count, an unknown benchmark or option) is one
line on stderr and exit code 2, never a traceback.

Example:
    $ dataforge bench all --quick            # demo data, about 1-2 minutes on 2 cores
    $ dataforge bench image --data ~/imagenet/train --workers 0,4,8 --device cuda
    $ python -m dataforge bench text --data corpus.jsonl --text-key body
    $ dataforge shards write ~/imagenet/train shards/train --max-bytes 512M --workers 8
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from dataforge.bench import ALL, BENCHMARKS
from dataforge.bench.common import BenchError, env_info
from dataforge.datasets import write_command as shards_write
from dataforge.doctor import command as doctor

_PLOTTED = ("image", "text")  # the throughput benchmarks: their run() draws <name>.png into out
INDEX = "index.json"

# NOTE [options per benchmark]: each benchmark lists the options its run() uses; its
# --help shows those only, and any other option is refused after parsing (it is
# registered hidden, so that the error can name the benchmark instead of argparse's
# "unrecognized arguments"). --quick and --out are common to all.
USES: dict[str, tuple[str, ...]] = {
    "image": ("data", "images", "device", "workers", "batch_size", "seconds", "repeats",
              "image_size", "num_images", "warmup"),
    "text": ("data", "device", "workers", "batch_size", "seconds", "repeats", "text_key",
             "label_key", "num_docs", "warmup"),
    "samplers": ("repeats", "num_labels", "arms"),
    "collate": ("batch_size", "seconds", "repeats"),
    "feeding": ("device", "workers", "batch_size", "seconds", "repeats"),
    "transforms": ("data", "device", "batch_size", "seconds", "repeats", "image_size",
                   "num_images", "num_docs"),
    "shards": ("workers", "batch_size", "repeats", "num_images", "num_docs"),
}
USES["all"] = tuple(dict.fromkeys(o for name in ALL for o in USES[name]))
_SINGLE_WORKERS = ("feeding", "shards")  # takes one DataLoader workers count, not a sweep
_HIDDEN = ("num_images", "num_docs", "warmup", "num_labels")  # sizes for tests and smoke runs

ABOUT: dict[str, str] = {
    "image": "JPEG folder -> normalized batches on the device: stock DataLoader, dataforge "
             "loaders and torchdata.nodes against the measured limit and parallel ceiling",
    "text": "JSONL texts -> padded token batches: per-sample tokenization (stock) against "
            "packed tokens + length bucketing (dataforge), each against its own limit",
    "samplers": "sampler throughput and memory on 1M (--quick) or 100M synthetic labels; "
                "padding efficiency of length bucketing",
    "collate": "padding collate on one synthetic batch: PadCollate vs DataCollatorWithPadding "
               "vs pad_sequence",
    "feeding": "host-to-device copies of synthetic uint8 batches: DevicePrefetcher vs "
               ".to(device) vs the raw pinned copy (a GPU benchmark; on a CPU it says so)",
    "transforms": "per-sample image and text pipelines on one core",
    "shards": "demo images and text as shards on a loopback S3 server: conversion time and "
              "epoch 1 / epoch 2 samples/s for dataforge, webdataset, litdata and MosaicML streaming "
              "(each optional; needs dataforge[dev])",
    "all": f"{', '.join(ALL)} in turn, each writing its own files",
}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    # NOTE [one-line errors]: argparse prints usage and exits; raising instead lets
    # main() print one line and return 2 (also when called as main([...]) in tests).
    def error(self, message: str) -> Any:
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _workers(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            w = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma list of worker counts such as 0,2,4, got {text!r}") from None
        if w < 0:
            raise argparse.ArgumentTypeError(
                f"worker counts must be >= 0 (a comma list such as 0,2,4), got {w} in {text!r}")
        out.append(w)
    return out


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not v > 0 or v != v:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return v

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _device(text: str) -> str:
    t = text.strip().lower()
    if t in ("cpu", "cuda", "auto") or (t.startswith("cuda:") and t[5:].isdigit()):
        return t
    raise argparse.ArgumentTypeError(f"expected cpu, cuda (or cuda:N) or auto, got {text!r}")


def _option_help(opt: str, what: str) -> str:
    """The help line of ``opt`` as benchmark ``what`` uses it."""
    if opt == "data":
        return {
            "image": "your ImageFolder (ROOT/<class>/<image>)",
            "text": "a JSONL file with a text (and label) key per line",
            "transforms": "an image folder (image part) or a JSONL file (text part)",
            "all": "a folder goes to image, a JSONL file to text",
        }[what] + "; default: demo data generated once into $DATAFORGE_CACHE (~/.cache/dataforge/demo)"
    if opt == "workers":
        if what == "shards":
            return "DataLoader workers of every library's reader (default 2)"
        if what in _SINGLE_WORKERS:
            return "DataLoader workers (default 2 on CUDA, 0 on CPU)"
        return ("comma list of worker counts to sweep, e.g. 0,2,4 (default 0,<cores>; with "
                "--quick one small value)" + ("; feeding takes it when it is one count"
                                               if what == "all" else ""))
    defaults = {  # (batch_size, seconds, repeats) defaults as each run() sets them
        "image": ("64; --quick 32", "steady-state seconds per arm and repeat (default 10; --quick 1)", "3"),
        "text": ("64", "steady-state seconds per arm and repeat (default 10; --quick 1)", "3"),
        "samplers": ("", "", "3"),
        "collate": ("64", "measured seconds per arm and input form (default 4; --quick 0.3)",
                    "5; --quick 3"),
        "feeding": ("64; --quick 32", "seconds per arm and repeat (default 1; --quick 0.2)",
                    "5; --quick 3"),
        "transforms": ("64", "seconds per image run (default 3; --quick 0.5)", "5; --quick 3"),
        "shards": ("64", "", "3; --quick 1"),
    }
    if what == "all":
        users = ", ".join(n for n in ALL if opt in USES[n])
        own = "; default: each benchmark's own"
        return {"batch_size": f"samples per batch{own}", "seconds": f"measured seconds per arm{own}",
                "repeats": f"measured runs per arm, the median is reported{own}",
                "device": "cpu, cuda or auto (default cpu)", "image_size": "crop size (default 224)",
                "text_key": "JSONL text field (default text)",
                "label_key": "JSONL label field (default label; '' for unlabelled text)",
                }.get(opt, opt) + f" (used by {users})"
    batch, seconds, repeats = defaults[what]
    return {
        "device": "cpu, cuda or auto (default cpu)",
        "batch_size": f"samples per batch (default {batch})",
        "seconds": seconds,
        "repeats": f"measured runs per arm; the median is reported (default {repeats})",
        "image_size": "crop size (default 224)",
        "images": "generated image set when there is no --data: demo (300-500 px) or photos "
                  "(1-12 MP camera-size JPEGs); default demo",
        "text_key": "JSONL text field (default text)",
        "label_key": "JSONL label field (default label; '' for unlabelled text)",
        "arms": "comma list of arms to run, e.g. undersample,bucket (default all; names in "
                "dataforge.bench.samplers.ARMS)",
    }[opt]


_OPTION_ARGS: dict[str, dict[str, Any]] = {
    "data": {"metavar": "PATH"},
    "device": {"type": _device, "default": "cpu", "metavar": "{cpu,cuda,auto}"},
    "workers": {"type": _workers, "metavar": "LIST"},
    "batch_size": {"type": _positive(int), "metavar": "N"},
    "seconds": {"type": _positive(float), "metavar": "S"},
    "repeats": {"type": _positive(int), "metavar": "N"},
    "image_size": {"type": _positive(int), "default": 224, "metavar": "N"},
    "images": {"choices": ("demo", "photos"), "default": "demo"},
    "text_key": {"default": "text", "metavar": "KEY"},
    "label_key": {"default": "label", "metavar": "KEY"},
    "num_images": {"type": _positive(int)},
    "num_docs": {"type": _positive(int)},
    "num_labels": {"type": _positive(int)},
    "arms": {"metavar": "LIST"},
    "warmup": {"type": float},
}


def _add_benchmark(sub: Any, what: str) -> None:
    p = sub.add_parser(what, help=ABOUT[what], description=f"dataforge bench {what}: {ABOUT[what]}.")
    p.add_argument("--quick", action="store_true", help="small data and short windows")
    p.add_argument("--out", default="bench_out", metavar="DIR",
                   help=f"folder for {'<benchmark>' if what == 'all' else what}.json"
                        + (" and plots" if what in (*_PLOTTED, "all") else "")
                        + f", and {INDEX} (which run wrote which file); default ./bench_out")
    for opt, kwargs in _OPTION_ARGS.items():
        flag = "--" + opt.replace("_", "-")
        if opt in USES[what]:
            help_text = argparse.SUPPRESS if opt in _HIDDEN else _option_help(opt, what)
            if opt == "workers" and what in _SINGLE_WORKERS:
                kwargs = {**kwargs, "metavar": "N"}
            p.add_argument(flag, dest=opt, help=help_text, **kwargs)
        else:  # NOTE [options per benchmark]: parsed, then refused by name
            p.add_argument(flag, dest=opt, help=argparse.SUPPRESS,
                           **{**kwargs, "default": argparse.SUPPRESS})


def _version() -> str:
    import torch

    from dataforge import __version__

    return f"dataforge {__version__} (torch {torch.__version__}, python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dataforge", description="dataforge: data pipelines for PyTorch")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser, metavar="COMMAND")
    b = sub.add_parser(
        "bench", help="throughput benchmarks against stock PyTorch",
        description="Measure input-pipeline throughput on this machine, side by side with stock "
                    "PyTorch in the same run, against the measured limit. Each benchmark has "
                    "its own options: dataforge bench BENCHMARK --help.")
    benches = b.add_subparsers(dest="what", required=True, parser_class=_Parser, metavar="BENCHMARK")
    for what in (*BENCHMARKS, "all"):
        _add_benchmark(benches, what)
    _add_shards(sub)
    doctor.add_arguments(sub.add_parser("doctor", help=doctor.ABOUT,
                                        description=f"dataforge doctor: {doctor.ABOUT}."))
    return parser


def _add_shards(sub: Any) -> None:
    s = sub.add_parser("shards", help="write datasets as tar (webdataset), JSONL or Parquet shards",
                       description="Shard files: dataforge shards write SRC OUT.")
    cmds = s.add_subparsers(dest="shards_cmd", required=True, parser_class=_Parser, metavar="ACTION")
    w = cmds.add_parser(
        "write", help="an ImageFolder or a CSV/JSONL table -> shards plus an index",
        description="Write SRC as shards OUT/<prefix>-NNNNNN.<format> and OUT/<prefix>.index.json, "
                    "deterministically (the same bytes for any --workers) and atomically (no half-"
                    "written shard is ever listed; a rerun overwrites). An image folder "
                    "(SRC/<class>/<image>) gives samples {<image extension>: file bytes, cls: class "
                    "id}; a table file (CSV, TSV, JSONL, Parquet) one sample per row ({json: row} in tar and Parquet shards, "
                    "the row itself in JSONL shards).")
    shards_write.add_arguments(w, count=_positive(int))


def _refuse_unused(args: argparse.Namespace) -> None:
    """NOTE [options per benchmark]: an option the benchmark does not use is an error."""
    given = [o for o in _OPTION_ARGS if o not in USES[args.what] and hasattr(args, o)]
    if given:
        flags = ", ".join("--" + o.replace("_", "-") for o in given)
        takes = ", ".join("--" + o.replace("_", "-") for o in ("quick", "out", *USES[args.what])
                          if o not in _HIDDEN)
        raise _UsageError(f"bench {args.what} does not use {flags}; it takes {takes} "
                          f"(see dataforge bench {args.what} --help)")
    workers = getattr(args, "workers", None)
    if args.what in _SINGLE_WORKERS and workers is not None and len(workers) != 1:
        raise _UsageError(f"bench {args.what} takes one --workers count (DataLoader workers), "
                          f"got {','.join(map(str, workers))} (see dataforge bench {args.what} --help)")


def _check_data(what: str, args: argparse.Namespace) -> dict[str, str | None]:
    """Which benchmark gets ``--data``; checked before anything runs."""
    from dataforge.bench.data import check_image_folder, check_jsonl

    if getattr(args, "data", None) is None:
        return {}
    p = Path(args.data).expanduser()
    target = what
    if what == "all":
        target = "image" if p.is_dir() else "text"
    if target == "image":
        check_image_folder(p)
    elif target == "text":
        if p.is_dir():
            raise BenchError(f"--data {str(p)!r} is a folder; the text benchmark expects a JSONL "
                             f"file with a {args.text_key!r} key per line")
        check_jsonl(p, args.text_key, args.label_key or None)
    return {target: str(p)}


def _progress(line: str) -> None:
    print(f"  .. {line}", file=sys.stderr, flush=True)


def run_kwargs(name: str, args: argparse.Namespace, data: str | None, out: Path) -> dict[str, Any]:
    """The keyword arguments of benchmark ``name``'s ``run()``: the options it uses, when given."""
    kw: dict[str, Any] = {"quick": args.quick, "device": getattr(args, "device", "cpu"),
                          "data": data, "out": str(out) if name in _PLOTTED else None}
    for opt in USES.get(name, ()):
        v: Any = getattr(args, opt, None)
        if opt == "data" or v is None:
            continue
        if opt == "label_key":
            v = v or None  # '' -> unlabelled text
        if opt == "workers" and name in _SINGLE_WORKERS:
            if len(v) != 1:
                continue  # `all`: a sweep is for image and text (alone, refused at parsing)
            v = v[0]
        kw[opt] = v
    return kw


def _run_one(name: str, args: argparse.Namespace, data: str | None, out: Path) -> dict[str, Any]:
    try:
        mod = importlib.import_module(f"dataforge.bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"dataforge.bench.{name}":
            return {"status": "not available",
                    "reason": f"dataforge.bench.{name} is not available yet"}
        raise
    kw = run_kwargs(name, args, data, out)
    if "progress" in inspect.signature(mod.run).parameters:
        kw["progress"] = _progress
    result = mod.run(**kw)
    result.setdefault("status", "ok")
    print(f"\n== {name} ==\n{mod.format_table(result)}", flush=True)
    return result


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _update_index(out: Path, files: list[str], entry: dict[str, Any]) -> None:
    """Record in ``<out>/index.json`` which run wrote ``files``; entries of deleted files go."""
    path = out / INDEX
    try:
        index = json.loads(path.read_text())
        if not isinstance(index, dict) or not isinstance(index.get("files"), dict):
            raise ValueError
    except (OSError, ValueError):
        index = {"files": {}}
    index["about"] = ("which dataforge bench run wrote each file of this folder: command, "
                      "date, status")
    index["files"].update({f: entry for f in files})
    index["files"] = {f: e for f, e in sorted(index["files"].items()) if (out / f).exists()}
    _write_json(path, index)


def bench(args: argparse.Namespace, argv: list[str]) -> int:
    from dataforge.bench.report import SCHEMA_VERSION, validate_document
    from dataforge.bench.runner import resolve_device

    if hasattr(args, "device"):
        args.device = str(resolve_device(args.device))  # --device cuda without a GPU fails here
    device = getattr(args, "device", "cpu")
    data = _check_data(args.what, args)
    names = list(ALL) if args.what == "all" else [args.what]
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {str(out)!r} is a file; expected a folder for the results and plots")
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["dataforge", *argv])
    failed = 0
    written: list[str] = []
    t0 = time.perf_counter()
    for name in names:
        print(f"-- dataforge bench {name}", file=sys.stderr, flush=True)
        t1 = time.perf_counter()
        try:
            result = _run_one(name, args, data.get(name), out)
        except BenchError as exc:
            if len(names) == 1:
                raise
            result = {"status": "failed", "reason": str(exc)}
        except Exception as exc:
            if len(names) == 1:
                raise
            result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        if result["status"] == "failed":
            failed += 1
            print(f"dataforge bench {name}: failed: {result['reason']}", file=sys.stderr)
        elif result["status"] == "not available":
            print(f"dataforge bench {name}: {result['reason']}", file=sys.stderr)
        seconds = time.perf_counter() - t1
        doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "command": command,
                               "env": env_info(device), "benchmarks": {name: result},
                               "seconds_by_benchmark": {name: seconds}, "total_seconds": seconds}
        validate_document(doc)
        _write_json(out / f"{name}.json", doc)
        files = [f"{name}.json"]
        if result.get("plot"):
            files.append(Path(result["plot"]).name)
        _update_index(out, files, {"command": command, "date": doc["env"]["date"],
                                   "benchmark": name, "status": result["status"]})
        written += files
    total = time.perf_counter() - t0
    print(f"\nwrote {', '.join(str(out / f) for f in written)}; {out / INDEX} says which run "
          f"wrote which file ({total:.0f} s)", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dataforge`` and ``python -m dataforge``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.cmd == "bench":
            _refuse_unused(args)
        elif args.cmd == "shards" and args.workers < 0:
            raise _UsageError(f"argument --workers: expected a count >= 0, got {args.workers}")
    except _UsageError as exc:
        print(f"dataforge: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    try:
        if args.cmd == "bench":
            return bench(args, argv)
        if args.cmd == "shards":
            return shards_write.main(args)
        if args.cmd == "doctor":
            return doctor.main(args)
    except BenchError as exc:
        print(f"dataforge {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError) as exc:
        if args.cmd != "shards":
            raise
        print(f"dataforge shards write: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dataforge: interrupted", file=sys.stderr)
        return 130
    return 2  # pragma: no cover - argparse requires a known command
