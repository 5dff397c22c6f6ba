"""The ``dataforge`` command: ``dataforge bench image | text | samplers | collate | feeding | transforms | all``.

Each benchmark prints a table, and the run writes ``<out>/results.json`` (schema
in :mod:`dataforge.bench.report`) plus a PNG per throughput benchmark. Bad input
(a ``--data`` path of the wrong shape, ``--device cuda`` without a GPU, a
negative worker count, an unknown benchmark) is one line on stderr and exit code
2, never a traceback.

Example:
    $ dataforge bench all --quick            # demo data, about 1-2 minutes on 2 cores
    $ dataforge bench image --data ~/imagenet/train --workers 0,4,8 --device cuda
    $ python -m dataforge bench text --data corpus.jsonl --text-key body
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from dataforge.bench import ALL, BENCHMARKS
from dataforge.bench.common import BenchError, env_info

_OWN = ("image", "text")  # the throughput benchmarks that take the full set of options


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dataforge", description="dataforge: data pipelines for PyTorch")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser, metavar="COMMAND")
    b = sub.add_parser(
        "bench", help="throughput benchmarks against stock PyTorch",
        description="Measure input-pipeline throughput on this machine, side by side with stock "
                    "PyTorch in the same run, against the measured limit (and, for image, the "
                    "parallel ceiling: the same work in one process per core, no loader).")
    b.add_argument("what", choices=[*BENCHMARKS, "all"], metavar="BENCHMARK",
                   help=f"one of {', '.join(BENCHMARKS)}, or all ({', '.join(ALL)})")
    b.add_argument("--data", metavar="PATH", help="your ImageFolder (ROOT/<class>/<image>) for image, or a JSONL "
                   "file for text; default: demo data generated once into $DATAFORGE_CACHE "
                   "(~/.cache/dataforge/demo)")
    b.add_argument("--device", type=_device, default="cpu", metavar="{cpu,cuda,auto}", help="cpu, cuda or auto (default cpu)")
    b.add_argument("--workers", type=_workers, metavar="LIST", help="comma list of worker counts to sweep, e.g. "
                   "0,2,4 (default 0,<cores>; with --quick one small value)")
    b.add_argument("--batch-size", type=_positive(int), metavar="N", help="samples per batch (default 64; "
                   "image --quick 32)")
    b.add_argument("--seconds", type=_positive(float), metavar="S", help="steady-state seconds per arm and "
                   "repeat (default 10; --quick 1)")
    b.add_argument("--repeats", type=_positive(int), default=3, metavar="N", help="runs per arm; the median is "
                   "reported (default 3)")
    b.add_argument("--quick", action="store_true", help="small data and short windows (~1-2 min)")
    b.add_argument("--out", default="bench_out", metavar="DIR", help="folder for results.json and plots "
                   "(default ./bench_out)")
    b.add_argument("--image-size", type=_positive(int), default=224, metavar="N", help="crop size (default 224)")
    b.add_argument("--text-key", default="text", metavar="KEY", help="JSONL text field (default text)")
    b.add_argument("--label-key", default="label", metavar="KEY", help="JSONL label field (default label)")
    # Hidden: sizes for tests and smoke runs.
    b.add_argument("--num-images", type=_positive(int), help=argparse.SUPPRESS)
    b.add_argument("--num-docs", type=_positive(int), help=argparse.SUPPRESS)
    b.add_argument("--warmup", type=float, help=argparse.SUPPRESS)
    return parser


def _check_data(what: str, args: argparse.Namespace) -> dict[str, str | None]:
    """Which benchmark gets ``--data``; checked before anything runs."""
    from dataforge.bench.data import check_image_folder, check_jsonl

    if args.data is None:
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


def _run_one(name: str, args: argparse.Namespace, data: str | None, out: Path) -> dict[str, Any]:
    try:
        mod = importlib.import_module(f"dataforge.bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"dataforge.bench.{name}":
            return {"status": "not available",
                    "reason": f"dataforge.bench.{name} is not available yet"}
        raise
    kw: dict[str, Any] = {"quick": args.quick, "seconds": args.seconds, "device": args.device,
                          "data": data, "out": str(out) if name in _OWN else None}
    extra = {"workers": args.workers, "batch_size": args.batch_size, "repeats": args.repeats}
    if name in _OWN:
        kw.update(extra, progress=_progress, warmup=args.warmup)
        if name == "image":
            kw.update(image_size=args.image_size, num_images=args.num_images)
        else:
            kw.update(num_docs=args.num_docs, text_key=args.text_key, label_key=args.label_key or None)
    else:  # another module: pass only the options its run() names, when given
        params = inspect.signature(mod.run).parameters
        single = args.workers[0] if args.workers and len(args.workers) == 1 else None
        given = {**extra, "workers": single, "image_size": args.image_size,
                 "num_images": args.num_images, "num_docs": args.num_docs, "progress": _progress}
        kw.update({k: v for k, v in given.items() if k in params and v is not None})
    result = mod.run(**kw)
    result.setdefault("status", "ok")
    print(f"\n== {name} ==\n{mod.format_table(result)}", flush=True)
    return result


def bench(args: argparse.Namespace, argv: list[str]) -> int:
    from dataforge.bench.report import SCHEMA_VERSION, validate_document
    from dataforge.bench.runner import resolve_device

    device = str(resolve_device(args.device))  # --device cuda without a GPU fails here
    args.device = device
    data = _check_data(args.what, args)
    names = list(ALL) if args.what == "all" else [args.what]
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {str(out)!r} is a file; expected a folder for results.json and plots")
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION,
                           "command": " ".join(["dataforge", *argv]),
                           "env": env_info(device), "benchmarks": {}, "seconds_by_benchmark": {}}
    failed = 0
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
        doc["benchmarks"][name] = result
        doc["seconds_by_benchmark"][name] = time.perf_counter() - t1
    doc["total_seconds"] = time.perf_counter() - t0
    validate_document(doc)
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    print(f"\nwrote {path} ({doc['total_seconds']:.0f} s)", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dataforge`` and ``python -m dataforge``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"dataforge: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        if args.cmd == "bench":
            return bench(args, argv)
    except BenchError as exc:
        print(f"dataforge {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dataforge: interrupted", file=sys.stderr)
        return 130
    return 2  # pragma: no cover - argparse requires a known command
