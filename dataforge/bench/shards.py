"""``dataforge bench shards``: demo images and text as shards on a loopback S3 server.

For each data set (the demo JPEG folder: JPEG bytes and a class id per sample; the
demo JSONL corpus: a text and a class id per document) and each library, the samples
are converted to the library's shards on a
:class:`~dataforge.bench.loopback_s3.LoopbackS3` bucket (conversion time: encode,
write and upload), then read back through a ``DataLoader`` (``workers`` processes)
for two epochs, each with a fresh dataset over the same local cache folder:
samples/s of each epoch, worker start-up included. This is repeated ``repeats``
times, libraries in a rotated order each repeat (NOTE [interleaving] in
``runner.py``), each repeat into new objects and an empty cache; the median of each
figure is reported with every repeat's value. Samples are read as the library
yields them, fields undecoded (image bytes, text), so the figures are those of the
shard and storage layer, not of JPEG decoding. Each epoch must yield exactly the
written sample count, or the arm fails with that reason.

NOTE [shard arms]: every arm is optional and is reported ``absent`` with its reason
when its package is missing, never skipped silently nor replaced by other code:

- ``dataforge``: ``write_shards`` straight to ``s3://`` (``workers`` processes), read by
  ``from_shards`` with a local ``cache_dir`` when ``from_shards`` takes one (epoch 2
  reads the cache), else streaming every epoch (the row's note says which).
- ``webdataset``: ``ShardWriter`` to a local folder then an upload with s3fs (it writes
  local files only); read by ``WebDataset`` with its ``cache_dir`` file cache through
  an ``s3`` gopen handler that opens objects with fsspec/s3fs (webdataset's own
  ``pipe:aws s3 cp`` needs the aws command line).
- ``litdata``: ``optimize`` straight to ``s3://``, read by ``StreamingDataset`` with a
  ``cache_dir``; its S3 transport (obstore) is allowed plain http for the loopback endpoint.
- ``mosaicml-streaming``: ``MDSWriter`` to a local folder and ``s3://`` (it uploads each
  shard as it closes), read by ``StreamingDataset(remote=..., local=...)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dataforge.bench.common import BenchError, env_info, median, rotated

__all__ = ["LIBRARIES", "format_table", "run"]

LIBRARIES = ("dataforge", "webdataset", "litdata", "mosaicml-streaming")
_SHARDS_PER_SET = 8  # shards per data set and library, so that 2 workers read 4 each
Sample = dict[str, Any]


def _keep(batch: Any) -> Any:
    """The collate of every arm (and litdata's optimize fn): its input as it came."""
    return batch


def _image_samples(num_images: int) -> list[Sample]:
    from dataforge.bench.data import check_image_folder, demo_image_folder

    root = demo_image_folder(num_images, progress=False)
    return [{"__key__": f"{i:09d}", "jpg": Path(p).read_bytes(), "cls": label}
            for i, (p, label) in enumerate(check_image_folder(root))]


def _text_samples(num_docs: int) -> list[Sample]:
    from dataforge.bench.data import demo_text_corpus

    with open(demo_text_corpus(num_docs, progress=False), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    return [{"__key__": f"{i:09d}", "txt": d["text"], "cls": int(d["label"])} for i, d in enumerate(docs)]


def _loader(ds: Any, cfg: dict[str, Any]) -> Any:
    import torch

    # fork on Linux for every arm: litdata's optimize() changes the default start method,
    # and the webdataset arm's gopen handler is registered in this process only
    workers = cfg["workers"]
    ctx = "fork" if workers and sys.platform.startswith("linux") else None
    return torch.utils.data.DataLoader(ds, batch_size=cfg["batch_size"], num_workers=workers, collate_fn=_keep,
                                       multiprocessing_context=ctx)


def _epochs(make_loader: Callable[[], Iterable[list[Any]]], expected: int, what: str) -> tuple[float, float]:
    """Samples/s of two full epochs, each through a fresh loader from ``make_loader``."""
    rates = []
    for epoch in (1, 2):
        t0 = time.perf_counter()
        n = sum(len(batch) for batch in make_loader())
        dt = time.perf_counter() - t0
        if n != expected:
            raise BenchError(f"{what}: epoch {epoch} read {n} samples, {expected} were written")
        rates.append(n / dt)
    return rates[0], rates[1]


def _per_shard(samples: list[Sample]) -> int:
    return math.ceil(len(samples) / _SHARDS_PER_SET)


# ---- the arms: (samples, s3, url, cfg, tmp) -> row fields ----------------------------------------
def _dataforge(samples: list[Sample], s3: Any, url: str, cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import dataforge
    from dataforge.datasets.writer import write_shards

    t0 = time.perf_counter()
    w = write_shards(dataforge.from_sequence(samples), url, max_count=_per_shard(samples),
                     num_workers=cfg["workers"], storage_options=s3.storage_options)
    write_s = time.perf_counter() - t0
    cached = "cache_dir" in inspect.signature(dataforge.from_shards).parameters
    kw: dict[str, Any] = {"storage_options": s3.storage_options}
    if cached:
        kw["cache_dir"] = str(tmp / "cache")
    e1, e2 = _epochs(lambda: _loader(dataforge.from_shards(w.pattern, **kw), cfg), len(samples), f"dataforge {url}")
    return {"write_s": write_s, "epoch1_samples_per_s": e1, "epoch2_samples_per_s": e2,
            "shards": len(w.urls), "bytes": w.total_bytes,
            "note": "write_shards to s3:// (tar); from_shards(cache_dir=...): epoch 2 reads the local cache"
            if cached else "write_shards to s3:// (tar); from_shards streams every epoch (no cache_dir here)"}


def _gopen_s3(storage_options: dict[str, Any]) -> Callable[..., Any]:
    def gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> Any:
        import fsspec

        return fsspec.open(url, mode, **storage_options).open()

    return gopen_s3


def _webdataset(samples: list[Sample], s3: Any, url: str, cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import webdataset as wds

    gopen = importlib.import_module("webdataset.gopen")  # the module (wds.gopen is its function)
    local = tmp / "out"
    local.mkdir()
    t0 = time.perf_counter()
    with wds.ShardWriter(str(local / "shard-%06d.tar"), maxcount=_per_shard(samples), verbose=0) as sink:
        for s in samples:
            sink.write(s)
    names = sorted(p.name for p in local.iterdir())
    fs = s3.filesystem()
    for n in names:
        fs.put_file(str(local / n), f"{url.removeprefix('s3://')}/{n}")
    write_s = time.perf_counter() - t0
    gopen.gopen_schemes["s3"] = _gopen_s3(s3.storage_options)  # forked workers inherit it
    urls = [f"{url}/{n}" for n in names]
    (tmp / "cache").mkdir()

    def make() -> Any:
        return _loader(wds.WebDataset(urls, shardshuffle=False, cache_dir=str(tmp / "cache"), empty_check=False), cfg)

    e1, e2 = _epochs(make, len(samples), f"webdataset {url}")
    return {"write_s": write_s, "epoch1_samples_per_s": e1, "epoch2_samples_per_s": e2,
            "shards": len(names), "bytes": sum((local / n).stat().st_size for n in names),
            "note": "ShardWriter to local disk + s3fs upload; WebDataset(cache_dir=...) over an s3 gopen "
                    "handler (fsspec): epoch 2 reads webdataset's file cache"}


def _litdata(samples: list[Sample], s3: Any, url: str, cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import litdata
    from litdata.streaming import downloader

    downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = True  # obstore refuses http endpoints otherwise
    options = {"endpoint_url": s3.endpoint_url, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    t0 = time.perf_counter()
    litdata.optimize(fn=_keep, inputs=samples, output_dir=url, chunk_size=_per_shard(samples),
                     num_workers=max(1, cfg["workers"]), storage_options=options, verbose=False, mode="overwrite")
    write_s = time.perf_counter() - t0

    def make() -> Any:
        return _loader(litdata.StreamingDataset(url, cache_dir=str(tmp / "cache"), storage_options=options), cfg)

    e1, e2 = _epochs(make, len(samples), f"litdata {url}")
    chunks = [o for o in s3.filesystem().ls(url.removeprefix("s3://"), detail=True) if o["name"].endswith(".bin")]
    return {"write_s": write_s, "epoch1_samples_per_s": e1, "epoch2_samples_per_s": e2,
            "shards": len(chunks), "bytes": sum(int(o["size"]) for o in chunks),
            "note": "optimize() to s3:// (max(1, workers) processes); StreamingDataset(cache_dir=...): "
                    "epoch 2 reads its chunk cache"}


def _mosaic(samples: list[Sample], s3: Any, url: str, cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import os

    import streaming

    os.environ["S3_ENDPOINT_URL"] = s3.endpoint_url  # its boto3 uploader and downloader read it
    os.environ.update(s3.env)
    kinds = {"__key__": "str", "jpg": "bytes", "txt": "str", "cls": "int"}
    columns = {k: kinds[k] for k in samples[0]}
    payload = sum(len(v) for s in samples for v in s.values() if isinstance(v, (bytes, str)))
    t0 = time.perf_counter()
    with streaming.MDSWriter(out=(str(tmp / "out"), url), columns=columns, compression=None,
                             size_limit=max(1 << 16, payload // _SHARDS_PER_SET + 1), progress_bar=False) as w:
        for s in samples:
            w.write(s)
    write_s = time.perf_counter() - t0

    def make() -> Any:
        streaming.base.util.clean_stale_shared_memory()  # the previous epoch's dataset
        ds = streaming.StreamingDataset(remote=url, local=str(tmp / "cache"), shuffle=False, batch_size=cfg["batch_size"])
        return _loader(ds, cfg)

    e1, e2 = _epochs(make, len(samples), f"mosaicml-streaming {url}")
    shards = [o for o in s3.filesystem().ls(url.removeprefix("s3://"), detail=True) if o["name"].endswith(".mds")]
    return {"write_s": write_s, "epoch1_samples_per_s": e1, "epoch2_samples_per_s": e2,
            "shards": len(shards), "bytes": sum(int(o["size"]) for o in shards),
            "note": "MDSWriter(out=(local, s3://...)) uploading as shards close; StreamingDataset(remote=, "
                    "local=): epoch 2 reads its local copy"}


_ARMS: dict[str, tuple[str, Callable[..., dict[str, Any]] | None]] = {
    "dataforge": ("dataforge", _dataforge),
    "webdataset": ("webdataset", _webdataset),
    "litdata": ("litdata", _litdata),
    "mosaicml-streaming": ("streaming", _mosaic),
}


def absent_reason(library: str) -> str | None:
    """Why ``library``'s arm cannot run here, or ``None`` (NOTE [shard arms])."""
    module, arm = _ARMS[library]
    if importlib.util.find_spec(module) is None:
        return f"{library} is not installed (pip install {library})"
    if arm is None:
        return f"{library} is installed but dataforge bench shards has no arm for it yet"
    return None


def _remove(s3: Any, url: str) -> None:
    """Delete a repeat's objects: the server keeps every byte in this process's memory."""
    fs = s3.filesystem()
    if fs.exists(url):
        fs.rm(url, recursive=True)


_FIGURES = ("write_s", "epoch1_samples_per_s", "epoch2_samples_per_s")


def _row(library: str, data: str, samples: int, runs: list[dict[str, Any]], error: str | None) -> dict[str, Any]:
    """One library and data set: the medians over its repeats and every repeat's figures."""
    row: dict[str, Any] = {"library": library, "data": data, "samples": samples}
    reason = absent_reason(library)
    if reason is not None:
        return {**row, "status": "absent", "reason": reason}
    if error is not None:
        return {**row, "status": "failed", "reason": error}
    row.update(status="ok", **{k: median([x[k] for x in runs]) for k in _FIGURES},
               runs={k: [x[k] for x in runs] for k in _FIGURES})
    row.update({k: runs[-1][k] for k in ("shards", "bytes", "note")})
    return row


_FIXED_CONFIG = {
    "shards_per_set": _SHARDS_PER_SET,
    "server": "moto's S3 server on 127.0.0.1, a thread of this process",
    "fields": {"images": "jpg bytes + cls", "text": "txt + cls"},
}
_UNITS = {"write_s": "conversion seconds (encode, write, upload)",
          "epoch*_samples_per_s": "undecoded samples per second through a DataLoader"}


def run(
    *,
    quick: bool = False,
    seconds: float | None = None,
    device: str = "cpu",
    data: str | None = None,
    out: str | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    num_images: int | None = None,
    num_docs: int | None = None,
    repeats: int | None = None,
    progress: Callable[[str], None] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Convert and read the demo images and text with every library (module docstring).

    Args:
        quick: 64 images and 1000 documents (default 2000 and 2000).
        workers: DataLoader workers reading, and processes writing where a library
            writes in parallel (default 2).
        batch_size: samples per DataLoader batch (default 64).
        num_images, num_docs: data sizes.
        repeats: conversions and epoch pairs per library and data set (default 3; --quick 1).
        seconds, data, out: accepted for the common contract, unused (the work is two
            epochs of the demo sets); ``device`` is recorded only.
    """
    if kw:
        raise BenchError(f"unknown options for the shards benchmark: {sorted(kw)}")
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("s3fs") is None:
        return {"status": "not available",
                "reason": "the loopback S3 server needs moto[server] and s3fs: pip install 'dataforge[dev]'"}
    from dataforge.bench.loopback_s3 import LoopbackS3

    cfg: dict[str, Any] = {
        "quick": quick, "workers": 2 if workers is None else workers, "batch_size": batch_size or 64,
        "num_images": num_images or (64 if quick else 2000), "num_docs": num_docs or (1000 if quick else 2000),
        "repeats": repeats or (1 if quick else 3), **_FIXED_CONFIG,
    }
    say = progress or (lambda line: None)
    sets = {"images": _image_samples(cfg["num_images"]), "text": _text_samples(cfg["num_docs"])}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failed: dict[tuple[str, str], str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="dataforge-bench-shards-"))
    try:
        with LoopbackS3() as s3:
            bucket = s3.make_bucket("bench")
            present = [lib for lib in LIBRARIES if absent_reason(lib) is None]
            for r in range(cfg["repeats"]):
                for library in rotated(present, r):
                    for name, samples in sets.items():
                        if (library, name) not in failed:
                            say(f"repeat {r + 1}/{cfg['repeats']}: {library}, {name} ({len(samples)} samples)")
                            _one_run(library, name, samples, r, s3, bucket, cfg, tmp, runs, failed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [_row(lib, name, len(samples), runs.get((lib, name), []), failed.get((lib, name)))
            for lib in LIBRARIES for name, samples in sets.items()]
    return {"benchmark": "shards", "env": env_info(device), "config": cfg, "rows": rows, "units": _UNITS}


def _one_run(library: str, name: str, samples: Any, r: int, s3: Any, bucket: str, cfg: dict[str, Any],
             tmp: Path, runs: dict[tuple[str, str], list[dict[str, Any]]],
             failed: dict[tuple[str, str], str]) -> None:
    """One conversion + epoch pair of ``library`` over the set ``name``, into ``runs``; an
    exception is kept in ``failed`` (one library failing does not hide the others)."""
    where = tmp / f"{library}-{name}-{r}"
    where.mkdir()
    arm = _ARMS[library][1]
    assert arm is not None
    url = f"{bucket}/{library}-{name}-{r}"
    try:
        runs.setdefault((library, name), []).append(arm(samples, s3, url, cfg, where))
    except Exception as e:
        failed[(library, name)] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    finally:
        shutil.rmtree(where, ignore_errors=True)
        _remove(s3, url)


def format_table(result: dict[str, Any]) -> str:
    """One row per library and data set: conversion seconds, epoch-1 and epoch-2 samples/s."""
    cfg, env = result["config"], result["env"]
    lines = [
        f"shards benchmark: demo sets through {cfg['server']}; {cfg['workers']} workers, batch "
        f"{cfg['batch_size']}; median of {cfg['repeats']} repeat(s); {env['cpu']} x{env['cores']}",
        f"{'library':<20} {'data':<7} {'samples':>7} {'write s':>8} {'epoch 1/s':>10} {'epoch 2/s':>10}",
    ]
    for r in result["rows"]:
        head = f"{r['library']:<20} {r['data']:<7} {r['samples']:>7}"
        if r["status"] == "ok":
            lines.append(f"{head} {r['write_s']:>8.2f} {r['epoch1_samples_per_s']:>10,.0f} "
                         f"{r['epoch2_samples_per_s']:>10,.0f}")
        else:
            lines.append(f"{head} {r['status']}: {r['reason']}")
    notes = dict.fromkeys(f"{r['library']}: {r['note']}" for r in result["rows"] if r.get("note"))
    lines += [f"  {n}" for n in notes]
    return "\n".join(lines)
