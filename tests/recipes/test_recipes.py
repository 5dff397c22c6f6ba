"""The recipes run end to end on tiny demo data, resume exactly, run under torchrun,
and refuse bad input with one-line errors."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"

IMAGE_TINY = [
    "data.args.demo.num_images=96", "data.args.demo.num_classes=3", "data.args.demo.sizes=[40,56]",
    "transforms.args.size=32", "transforms.args.resize=36", "loader.batch_size=16", "loader.num_workers=0",
    "model.args.width=8", "train.epochs=2", "train.log_every=1", "train.checkpoint_every=1000",
    "train.device=\"cpu\"",
]
TEXT_TINY = [
    "data.args.demo.num_docs=300", "data.args.demo.num_classes=3", "tokenizer.args.vocab_size=300",
    "sampler.args.max_tokens=2048", "sampler.args.batch_size=32", "model.args.dim=16", "train.epochs=2",
    "train.log_every=1", "train.checkpoint_every=1000", "train.device=\"cpu\"",
]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DATAFORGE_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _run(script: str, tmp_path: Path, overrides: list[str], *extra: str, torchrun: int = 0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable]
    if torchrun:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd += ["-m", "torch.distributed.run", f"--nproc_per_node={torchrun}", f"--master_port={port}"]
    cmd += [str(RECIPES / script)]
    for o in overrides:
        cmd += ["--set", o]
    cmd += list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(tmp_path), cwd=tmp_path)


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _records(out) if r["kind"] == "step"}


def _one_line_error(res: subprocess.CompletedProcess[str], *words: str, alone: bool = True) -> None:
    """Exit code 2 and an ``error: ...`` line naming ``words``; with ``alone``, nothing else on
    stderr (HuggingFace's own loading messages come before the error otherwise)."""
    assert res.returncode == 2, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and (len(lines) == 1 or not alone), res.stderr
    for w in words:
        assert w in lines[-1], res.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("script", "tiny"), [("image_classification.py", IMAGE_TINY),
                                              ("text_classification.py", TEXT_TINY)])
def test_recipe_trains_and_resumes_exactly(tmp_path: Path, script: str, tiny: list[str]) -> None:
    full = _run(script, tmp_path, tiny, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]
    ref = _losses(tmp_path / "full")
    assert len(ref) >= 4
    assert (tmp_path / "full" / "metrics.png").is_file()
    epochs = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
              if json.loads(x)["kind"] == "epoch"]
    assert len(epochs) == 2 and 0.0 <= epochs[-1]["balanced_accuracy"] <= 1.0

    k = len(ref) // 2 + 1  # stop mid-epoch 1 or late in epoch 0, whatever the sizes
    # a trained tokenizer is not bit-reproducible (see the text recipe): reuse the first run's
    same_tok = ["--tokenizer", str(tmp_path / "full" / "tokenizer.json")] if "text" in script else []
    part = _run(script, tmp_path, [*tiny, f"train.max_steps={k}"], "--out", str(tmp_path / "part"), *same_tok)
    assert part.returncode == 0, part.stderr[-3000:]
    ckpt = tmp_path / "part" / "checkpoint.pt"
    # a stop says what happened and still writes the metrics and the plot
    assert f"stopped at train.max_steps={k}" in part.stdout and "balanced accuracy" in part.stdout, part.stdout
    assert (tmp_path / "part" / "metrics.png").is_file()
    assert any(r["kind"] == "stop" for r in _records(tmp_path / "part"))
    # without --out, the resumed run continues in the checkpoint's folder (cwd is tmp_path)
    resumed = _run(script, tmp_path, tiny, "--resume", str(ckpt))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "runs").exists()
    got = _losses(tmp_path / "part")
    assert sorted(got) == sorted(ref)
    for step, loss in ref.items():
        assert got[step] == pytest.approx(loss, rel=1e-4, abs=1e-5), f"step {step}"
    assert [r["epoch"] for r in _records(tmp_path / "part") if r["kind"] == "epoch"] == [0, 1]
    # resuming a finished run says there is nothing to train, and why
    (tmp_path / "part" / "metrics.png").unlink()
    again = _run(script, tmp_path, tiny, "--resume", str(ckpt))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train" in again.stdout and "train.epochs is 2" in again.stdout, again.stdout
    assert (tmp_path / "part" / "metrics.png").is_file()


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(("script", "tiny"), [("image_classification.py", IMAGE_TINY),
                                              ("text_classification.py", TEXT_TINY)])
def test_recipe_under_torchrun(tmp_path: Path, script: str, tiny: list[str]) -> None:
    res = _run(script, tmp_path, [*tiny, "train.epochs=1"], "--out", str(tmp_path / "ddp"), torchrun=2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _losses(tmp_path / "ddp")
    assert (tmp_path / "ddp" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("script", ["image_classification.py", "text_classification.py"])
def test_recipe_errors_are_one_line(tmp_path: Path, script: str) -> None:
    res = _run(script, tmp_path, [], "--data", str(tmp_path / "nope"))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "nope" in res.stderr, res.stderr
    res = _run(script, tmp_path, ["train.epochz=3"])
    assert res.returncode == 2 and "unknown config key 'train.epochz'" in res.stderr
    assert "train.epochs" in res.stderr  # lists the valid keys


@pytest.mark.slow
def test_resume_from_another_config_is_refused(tmp_path: Path) -> None:
    res = _run("image_classification.py", tmp_path, [*IMAGE_TINY, "train.max_steps=1"], "--out", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = tmp_path / "a" / "checkpoint.pt"
    before = ckpt.read_bytes()
    res = _run("image_classification.py", tmp_path, [*IMAGE_TINY, "optimizer.args.lr=0.1"], "--out",
               str(tmp_path / "a"), "--resume", str(ckpt))
    _one_line_error(res, "another config", "optimizer.args.lr is 0.003 there, 0.1 now", "--set optimizer.args.lr=0.003")
    assert "hash" not in res.stderr
    assert ckpt.read_bytes() == before  # nothing overwritten


@pytest.mark.parametrize("script", ["image_classification.py", "text_classification.py"])
def test_a_crafted_resume_file_runs_no_code(tmp_path: Path, script: str) -> None:
    """Issue 16 finding 9: unpickling --resume in full ran os.system before the config check."""
    import pickle

    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil").mkdir()
    evil = tmp_path / "evil" / "checkpoint.pt"
    evil.write_bytes(pickle.dumps({"format": 2, "config": {}, "model": Payload()}))
    res = _run(script, tmp_path, [], "--resume", str(evil))
    _one_line_error(res, "refused", str(evil))
    assert not marker.exists()


@pytest.mark.slow
def test_pretrained_reports_what_it_loaded_and_refuses_what_matches_nothing(tmp_path: Path) -> None:
    import torch
    from torchvision.models import resnet18

    res = _run("image_classification.py", tmp_path, [*IMAGE_TINY, "train.max_steps=1"], "--out", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr[-3000:]
    own = tmp_path / "a" / "checkpoint.pt"
    # the recipe's own checkpoint: its model part is taken
    res = _run("image_classification.py", tmp_path, [*IMAGE_TINY, "train.max_steps=1"], "--out", str(tmp_path / "b"),
               "--pretrained", str(own))
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"--pretrained: loaded (\d+) of \1 tensors", res.stdout), res.stdout
    # ... but not into another model
    res = _run("image_classification.py", tmp_path, [*IMAGE_TINY, "model.type=resnet18"], "--out",
               str(tmp_path / "c"), "--pretrained", str(own))
    _one_line_error(res, "matches none of the", "model.type 'resnet18'")
    # torchvision weights without model.type=resnet18: refused, not ignored
    torch_file = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), torch_file)
    n = len(resnet18(num_classes=3).state_dict())
    res = _run("image_classification.py", tmp_path, IMAGE_TINY, "--out", str(tmp_path / "d"),
               "--pretrained", str(torch_file))
    _one_line_error(res, "matches none of the", "model.type 'SmallCNN'")
    res = _run("image_classification.py", tmp_path, [*IMAGE_TINY, "model.type=resnet18", "train.max_steps=1"],
               "--out", str(tmp_path / "e"), "--pretrained", str(torch_file), "--freeze-backbone")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"loaded {n - 2} of {n} tensors" in res.stdout and "fc.weight" in res.stdout, res.stdout
    res = _run("image_classification.py", tmp_path, IMAGE_TINY, "--out", str(tmp_path / "f"),
               "--pretrained", str(tmp_path / "nope.pth"))
    _one_line_error(res, "does not exist", "nope.pth")


@pytest.mark.slow
def test_text_recipe_fine_tunes_a_local_hf_model(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from dataforge.transforms.text import train_tokenizer

    tok = train_tokenizer(["alpha beta gamma delta", "beta gamma", "delta alpha"] * 20, vocab_size=60)
    tok.save(str(tmp_path / "tokenizer.json"))
    cfg = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=512)
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path / "tiny-bert")
    res = _run("text_classification.py", tmp_path, [*TEXT_TINY, "train.max_steps=3"], "--out", str(tmp_path / "hf"),
               "--hf-model", str(tmp_path / "tiny-bert"), "--tokenizer", str(tmp_path / "tokenizer.json"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(_losses(tmp_path / "hf")) == 3
    res = _run("text_classification.py", tmp_path, TEXT_TINY, "--out", str(tmp_path / "hf2"),
               "--hf-model", str(tmp_path / "nope"))
    _one_line_error(res, "--hf-model")
    # a tokenizer that is not the model's (here: one trained on the corpus, 300 tokens) is refused
    # before training, not an IndexError inside the embedding
    res = _run("text_classification.py", tmp_path, TEXT_TINY, "--out", str(tmp_path / "hf3"),
               "--hf-model", str(tmp_path / "tiny-bert"))
    _one_line_error(res, "--hf-model", "not this model's tokenizer", alone=False)
    # the model folder's own tokenizer.json is used when --tokenizer is not given
    tok.save(str(tmp_path / "tiny-bert" / "tokenizer.json"))
    res = _run("text_classification.py", tmp_path, [*TEXT_TINY, "train.max_steps=2"], "--out", str(tmp_path / "hf4"),
               "--hf-model", str(tmp_path / "tiny-bert"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "the --hf-model's own" in res.stdout and len(_losses(tmp_path / "hf4")) == 2
    res = _run("text_classification.py", tmp_path, [*TEXT_TINY, "tokenizer.args.max_length=1000"], "--out",
               str(tmp_path / "hf5"), "--hf-model", str(tmp_path / "tiny-bert"))
    _one_line_error(res, "512 positions", "tokenizer.args.max_length", alone=False)


def test_run_main_frees_what_main_left_in_reference_cycles() -> None:
    """NOTE [distributed teardown] in recipes/common.py: a DDP model kept alive by a cycle
    after main returns must be freed before interpreter shutdown, not during it."""
    import gc
    import importlib.util
    import weakref

    spec = importlib.util.spec_from_file_location("recipes_common", RECIPES / "common.py")
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)

    class Model:
        pass

    refs: list[weakref.ref[Model]] = []

    def main() -> None:
        model = Model()
        model.step = lambda: model  # type: ignore[attr-defined]  # a closure cycle, as in the recipes
        refs.append(weakref.ref(model))

    def failing_main() -> None:
        main()
        raise common.RecipeError("bad input")

    was_enabled = gc.isenabled()
    gc.disable()  # only run_main's own collection may free the cycle
    try:
        assert common.run_main(main) == 0
        assert common.run_main(failing_main) == 2
    finally:
        if was_enabled:
            gc.enable()
    assert [r() for r in refs] == [None, None]
