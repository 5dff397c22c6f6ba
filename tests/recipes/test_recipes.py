"""The recipes run end to end on tiny demo data, resume exactly, run under torchrun,
and refuse bad input with one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

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


def _losses(out: Path) -> dict[int, float]:
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r["kind"] == "step"}


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
    resumed = _run(script, tmp_path, tiny, "--out", str(tmp_path / "part"), "--resume", str(ckpt))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = _losses(tmp_path / "part")
    assert sorted(got) == sorted(ref)
    for step, loss in ref.items():
        assert got[step] == pytest.approx(loss, rel=1e-4, abs=1e-5), f"step {step}"


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
    assert res.returncode == 2 and "another config" in res.stderr
    assert ckpt.read_bytes() == before  # nothing overwritten


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
    assert res.returncode == 2 and "--hf-model" in res.stderr


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
