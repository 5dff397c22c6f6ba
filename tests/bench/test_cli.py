"""Every user error of ``dataforge bench`` is one line on stderr and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataforge.cli import _run_one, build_parser, main


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
    assert "--workers" in capsys.readouterr().out


def test_parser_defaults():
    args = build_parser().parse_args(["bench", "image", "--workers", "0, 2,4"])
    assert args.workers == [0, 2, 4] and args.repeats == 3 and args.device == "cpu"
    assert args.image_size == 224 and args.out == "bench_out"


def test_missing_module_is_not_available(tmp_path):
    args = build_parser().parse_args(["bench", "image"])
    result = _run_one("no_such_benchmark", args, None, tmp_path)
    assert result == {"status": "not available",
                      "reason": "dataforge.bench.no_such_benchmark is not available yet"}


def test_subprocess_exit_code_and_one_line():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-m", "dataforge", "bench", "image", "--workers", "-1"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_other_modules_get_only_the_options_they_name(tmp_path, monkeypatch, capsys):
    import types

    seen: dict = {}
    fake = types.ModuleType("dataforge.bench.fakebench")

    def run(*, quick=False, seconds=None, device="cpu", data=None, out=None, workers=None,
            repeats=None, progress=None):
        seen.update(quick=quick, seconds=seconds, device=device, data=data, out=out,
                    workers=workers, repeats=repeats, progress=progress)
        return {"env": {}, "rows": []}

    fake.run = run
    fake.format_table = lambda result: "fake table"
    monkeypatch.setitem(sys.modules, "dataforge.bench.fakebench", fake)
    args = build_parser().parse_args(["bench", "image", "--quick", "--workers", "3", "--batch-size", "7"])
    result = _run_one("fakebench", args, None, tmp_path)
    assert result == {"env": {}, "rows": [], "status": "ok"}
    assert seen["workers"] == 3 and seen["repeats"] == 3 and seen["quick"] is True
    assert seen["out"] is None and callable(seen["progress"])  # batch_size: not a parameter
    args = build_parser().parse_args(["bench", "image", "--workers", "0,2"])
    _run_one("fakebench", args, None, tmp_path)
    assert seen["workers"] is None  # a sweep is not a single worker count
    assert "fake table" in capsys.readouterr().out
