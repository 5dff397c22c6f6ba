"""Every user error of ``dataforge bench`` is one line on stderr and exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataforge.bench.report import validate_document
from dataforge.cli import _HIDDEN, ABOUT, USES, _run_one, build_parser, main, run_kwargs


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def test_no_command(capsys):
    assert "required" in _err(capsys, [])


def test_unknown_benchmark(capsys):
    err = _err(capsys, ["bench", "nope"])
    assert "invalid choice: 'nope'" in err and "image" in err


@pytest.mark.parametrize("workers", ["0,-1", "-2", "a,b", "1,,2"])
def test_bad_workers(capsys, workers):
    err = _err(capsys, ["bench", "image", f"--workers={workers}"])
    assert "--workers" in err and "0,2,4" in err


@pytest.mark.parametrize("flag", ["--seconds=0", "--seconds=-1", "--repeats=0", "--batch-size=-3",
                                  "--device=tpu"])
def test_bad_numbers_and_device(capsys, flag):
    assert flag.split("=")[0] in _err(capsys, ["bench", "image", flag])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu(capsys):
    err = _err(capsys, ["bench", "image", "--device", "cuda"])
    assert "no CUDA device" in err and "--device cpu" in err


def test_data_missing(capsys, tmp_path):
    err = _err(capsys, ["bench", "image", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert "does not exist" in err and "ROOT/<class>/<image>" in err


def test_data_without_class_folders(capsys, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    err = _err(capsys, ["bench", "image", "--data", str(tmp_path)])
    assert "no class folders" in err


def test_data_without_images(capsys, tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("hi")
    err = _err(capsys, ["bench", "image", "--data", str(tmp_path)])
    assert "no image files" in err and "1 class folder" in err


def test_image_data_is_a_file(capsys, tiny_corpus):
    assert "expected an image folder" in _err(capsys, ["bench", "image", "--data", str(tiny_corpus)])


def test_jsonl_without_text_key(capsys, tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"body": "hello", "label": 0}) + "\n")
    err = _err(capsys, ["bench", "text", "--data", str(p)])
    assert "no string 'text' key" in err and "--text-key" in err


def test_jsonl_not_json_and_folder(capsys, tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("{not json}\n")
    assert "not JSON" in _err(capsys, ["bench", "text", "--data", str(p)])
    assert "is a folder" in _err(capsys, ["bench", "text", "--data", str(tmp_path)])


def test_all_routes_data_by_kind(capsys, tmp_path):
    # With `all`, a folder is the image data and a file the text data: both are checked.
    (tmp_path / "empty").mkdir()
    assert "no class folders" in _err(capsys, ["bench", "all", "--data", str(tmp_path / "empty")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1, 2]\n")
    assert "JSON object" in _err(capsys, ["bench", "all", "--data", str(bad)])


def test_out_is_a_file(capsys, tmp_path, tiny_images):
    f = tmp_path / "file"
    f.write_text("x")
    err = _err(capsys, ["bench", "image", "--data", str(tiny_images), "--out", str(f)])
    assert "--out" in err and "is a file" in err


def test_help_exits_zero(capsys):
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("image", "text", "samplers", "collate", "feeding", "all"))
    assert main(["bench", "image", "--help"]) == 0
    assert "--workers" in capsys.readouterr().out


def test_version(capsys):
    import dataforge

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"dataforge {dataforge.__version__} (torch ")


def _flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?m)^  (--[a-z-]+)", help_text)) - {"--help"}


@pytest.mark.parametrize("what", [*USES])
def test_each_benchmark_lists_only_the_options_it_uses(capsys, what):
    """Every benchmark printed the same help (all options) before."""
    assert main(["bench", what, "--help"]) == 0
    out = capsys.readouterr().out
    shown = {"--" + o.replace("_", "-") for o in ("quick", "out", *USES[what]) if o not in _HIDDEN}
    assert _flags(out) == shown
    assert ABOUT[what].split(":")[0][:30] in " ".join(out.split())


def test_helps_differ():
    assert USES["samplers"] == ("repeats", "num_labels", "arms")
    assert "data" not in USES["collate"] and "workers" not in USES["collate"]


@pytest.mark.parametrize("argv, message", [
    (["bench", "samplers", "--data", "folder"], "bench samplers does not use --data; it takes "
                                                "--quick, --out, --repeats"),
    (["bench", "collate", "--workers", "2", "--device", "cpu"], "does not use --device, --workers"),
    (["bench", "samplers", "--seconds", "5"], "does not use --seconds"),
    (["bench", "feeding", "--text-key", "body"], "does not use --text-key"),
    (["bench", "feeding", "--workers", "0,2"], "takes one --workers count"),
])
def test_an_option_the_benchmark_does_not_use_is_an_error(capsys, argv, message):
    """`bench samplers --data folder` ignored --data and ran the full 100M benchmark."""
    err = _err(capsys, argv)
    assert message in err and "--help" in err


def test_parser_defaults():
    args = build_parser().parse_args(["bench", "image", "--workers", "0, 2,4"])
    assert args.workers == [0, 2, 4] and args.repeats is None and args.device == "cpu"
    assert args.image_size == 224 and args.out == "bench_out"
    assert not hasattr(build_parser().parse_args(["bench", "samplers"]), "workers")


def test_missing_module_is_not_available(tmp_path):
    args = build_parser().parse_args(["bench", "image"])
    result = _run_one("no_such_benchmark", args, None, tmp_path)
    assert result == {"status": "not available",
                      "reason": "dataforge.bench.no_such_benchmark is not available yet"}


def test_run_kwargs_pass_each_benchmark_its_options(tmp_path):
    args = build_parser().parse_args(["bench", "all", "--quick", "--workers", "3", "--batch-size", "7",
                                      "--seconds", "0.5"])
    image = run_kwargs("image", args, None, tmp_path)
    assert image["workers"] == [3] and image["batch_size"] == 7 and image["out"] == str(tmp_path)
    assert "repeats" not in image  # not given: the benchmark's own default
    assert run_kwargs("feeding", args, None, tmp_path)["workers"] == 3  # one DataLoader count
    collate = run_kwargs("collate", args, None, tmp_path)
    assert collate == {"quick": True, "device": "cpu", "data": None, "out": None, "batch_size": 7,
                       "seconds": 0.5}
    samplers = run_kwargs("samplers", args, None, tmp_path)
    assert set(samplers) == {"quick", "device", "data", "out"}
    sweep = build_parser().parse_args(["bench", "all", "--workers", "0,2"])
    assert "workers" not in run_kwargs("feeding", sweep, None, tmp_path)  # a sweep is for image/text
    text = build_parser().parse_args(["bench", "text", "--label-key", ""])
    assert run_kwargs("text", text, "c.jsonl", tmp_path)["label_key"] is None


def _fake(monkeypatch, name, calls):
    import types

    fake = types.ModuleType(f"dataforge.bench.{name}")

    def run(*, quick=False, seconds=None, device="cpu", data=None, out=None, repeats=None):
        calls.append((name, repeats))
        return {"env": {}, "rows": [repeats]}

    fake.run = run
    fake.format_table = lambda result: f"{name} table"
    monkeypatch.setitem(sys.modules, f"dataforge.bench.{name}", fake)


def test_each_benchmark_writes_its_own_file_and_the_index_says_which_run(tmp_path, monkeypatch, capsys):
    """`bench samplers` overwrote the demo's results.json next to stale plots."""
    calls: list = []
    _fake(monkeypatch, "collate", calls)
    _fake(monkeypatch, "samplers", calls)
    out = tmp_path / "out"
    assert main(["bench", "collate", "--repeats", "2", "--out", str(out)]) == 0
    first = (out / "collate.json").read_text()
    assert main(["bench", "samplers", "--repeats", "4", "--out", str(out)]) == 0
    assert calls == [("collate", 2), ("samplers", 4)]
    assert sorted(p.name for p in out.iterdir()) == ["collate.json", "index.json", "samplers.json"]
    assert (out / "collate.json").read_text() == first  # not clobbered by the second run
    doc = json.loads((out / "samplers.json").read_text())
    validate_document(doc)
    assert list(doc["benchmarks"]) == ["samplers"] and doc["benchmarks"]["samplers"]["rows"] == [4]
    index = json.loads((out / "index.json").read_text())["files"]
    assert set(index) == {"collate.json", "samplers.json"}
    assert index["collate.json"]["command"] == f"dataforge bench collate --repeats 2 --out {out}"
    assert index["samplers.json"]["command"].startswith("dataforge bench samplers --repeats 4")
    assert index["samplers.json"]["status"] == "ok" and index["samplers.json"]["date"]
    stdout = capsys.readouterr().out
    assert "samplers table" in stdout and f"wrote {out / 'samplers.json'}" in stdout


def test_subprocess_exit_code_and_one_line():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-m", "dataforge", "bench", "image", "--workers", "-1"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


# ---- dataforge shards write ------------------------------------------------------------------
def test_shards_write_image_folder(tmp_path, tiny_images, capsys):
    import dataforge
    from dataforge.datasets.fields import FieldDecoder
    from dataforge.datasets.writer import read_index

    out = tmp_path / "shards"
    assert main(["shards", "write", str(tiny_images), str(out), "--max-count", "5", "--workers", "2"]) == 0
    stdout = capsys.readouterr().out
    assert "wrote 12 samples in 3 shards" in stdout and "shard-{000000..000002}.tar" in stdout
    folder = dataforge.ImageFolder(tiny_images, decode=False)
    index = read_index(out / "shard.index.json")
    assert index["metadata"]["classes"] == folder.classes
    got = list(dataforge.from_shards(str(out / index["pattern"])).map(FieldDecoder(decode_images=False)))
    assert [s["cls"] for s in got] == folder.labels.tolist()
    assert [s["jpg"] for s in got] == [Path(p).read_bytes() for p in folder.paths]


@pytest.mark.parametrize("format", ["tar", "jsonl", "parquet"])
def test_shards_write_table(tmp_path, tiny_corpus, format, capsys):
    import dataforge
    from dataforge.datasets.fields import decode_fields

    rows = [json.loads(line) for line in tiny_corpus.read_text().splitlines()]
    csv = tmp_path / "t.csv"
    csv.write_text("age,name\n22,ann\n38,bob\n")
    for src, expect in ((tiny_corpus, rows), (csv, [{"age": "22", "name": "ann"}, {"age": "38", "name": "bob"}])):
        out = tmp_path / f"{src.suffix[1:]}-{format}"
        assert main(["shards", "write", str(src), str(out), "--format", format, "--quiet"]) == 0
        got = list(dataforge.from_shards(str(out / f"shard-000000.{format}")).map(decode_fields))
        if format != "jsonl":
            assert [s["json"] for s in got] == expect
        else:
            assert [{k: v for k, v in s.items() if k != "__key__"} for s in got] == expect
    assert capsys.readouterr().err == ""  # --quiet: no progress bar


@pytest.mark.parametrize(("argv", "match"), [
    (["--max-bytes", "12Q"], "--max-bytes: expected a size"),
    (["--max-bytes", "0"], "--max-bytes: expected a size"),
    (["--workers", "-1"], "--workers: expected a count >= 0"),
    (["--format", "zip"], "invalid choice: 'zip'"),
])
def test_shards_write_bad_options(capsys, tmp_path, tiny_images, argv, match):
    assert match in _err(capsys, ["shards", "write", str(tiny_images), str(tmp_path / "o"), *argv])


def test_shards_write_bad_sources(capsys, tmp_path):
    assert "does not exist" in _err(capsys, ["shards", "write", str(tmp_path / "nope"), str(tmp_path / "o")])
    (tmp_path / "x.bin").write_bytes(b"PAR1")
    assert "neither a folder nor" in _err(capsys, ["shards", "write", str(tmp_path / "x.bin"), str(tmp_path)])
    (tmp_path / "bad.csv").write_text("a,b\n1\n")
    assert "line 2 has 1 fields" in _err(capsys, ["shards", "write", str(tmp_path / "bad.csv"), str(tmp_path / "o")])
    (tmp_path / "empty.csv").write_text("")
    assert "has no records" in _err(capsys, ["shards", "write", str(tmp_path / "empty.csv"), str(tmp_path / "o")])
    (tmp_path / "s.tar").write_bytes(b"")
    assert "is a tar shard" in _err(capsys, ["shards", "write", str(tmp_path / "s.tar"), str(tmp_path / "o")])
    assert "required" in _err(capsys, ["shards"])


@pytest.mark.parametrize("name", ["t.tsv", "t.parquet", "t.jsonl"])
def test_shards_write_reads_tables_through_the_reader_registry(tmp_path, name):
    """A table SRC of any registered format becomes shards whose records are its rows."""
    import json

    from dataforge.cli import main

    rows = [{"text": f"doc {i}", "label": i % 2} for i in range(5)]
    src = tmp_path / name
    if name.endswith(".tsv"):
        src.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows))
    elif name.endswith(".parquet"):
        pa = pytest.importorskip("pyarrow")
        pytest.importorskip("pyarrow.parquet").write_table(pa.Table.from_pylist(rows), src)
    else:
        src.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["shards", "write", str(src), str(tmp_path / "o"), "--format", "jsonl"]) == 0
    got = [json.loads(line) for f in sorted((tmp_path / "o").glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert [g.pop("__key__") for g in got] == [f"{i:09d}" for i in range(5)]
    assert got == ([{"text": r["text"], "label": str(r["label"])} for r in rows] if name.endswith(".tsv") else rows)


def test_size_option():
    from dataforge.datasets.write_command import parse_size

    assert [parse_size(t) for t in ("1000", "4K", "256M", "1G", "2MiB", "1.5k")] == [
        1000, 4096, 256 << 20, 1 << 30, 2 << 20, 1536]
