"""Recipe checkpoints are plain data: a crafted file runs no code, an old one is refused
with the way forward, a config mismatch names its keys, and --pretrained says what it
loaded or refuses a file that matches nothing."""

from __future__ import annotations

import importlib
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="module")
def recipes() -> Any:
    """The recipe modules (they import each other by their file names, as the scripts do)."""
    sys.path.insert(0, str(RECIPES))
    try:
        mods = {name: importlib.import_module(name) for name in ("common", "checkpoints", "models")}
    finally:
        sys.path.remove(str(RECIPES))
    return type("Recipes", (), mods)


def _config(lr: float = 0.003, epochs: int = 2) -> dict[str, Any]:
    return {"model": {"type": "SmallCNN", "args": {"width": 8}},
            "optimizer": {"type": "AdamW", "args": {"lr": lr}},
            "data": {"args": {"sizes": [40, 56], "path": None}},
            "train": {"epochs": epochs, "out": "runs/x", "max_steps": None, "device": "cpu"}}


def _checkpoint(recipes: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    model = recipes.models.SmallCNN(3, width=8)
    opt = torch.optim.AdamW(model.parameters())
    return {"config": cfg, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "loader": {"version": 1, "epoch": 0, "batches_yielded": 3}, "step": 3}


class _Payload:
    """Unpickling this runs a shell command (what a crafted --resume file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_crafted_checkpoint_is_refused_and_runs_no_code(recipes: Any, tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint.pt"
    payload = {"format": 2, "config": _config(), "model": _Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(recipes.common.RecipeError) as info:
        recipes.checkpoints.load_checkpoint(path, _config())
    msg = str(info.value)
    assert "\n" not in msg and "refused" in msg and str(path) in msg, msg
    if writer == "torch.save":
        assert "posix.system" in msg or "nt.system" in msg  # names what it would have called
    assert not marker.exists()
    # the payload is live: a full unpickle would have run it
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_damaged_and_missing_files_are_one_line_errors(recipes: Any, tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    recipes.checkpoints.save_checkpoint(good, _checkpoint(recipes, _config()))
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("hello world" * 10)
    for name, words in (("cut.pt", "not a readable torch file"), ("text.pt", "not a readable torch file"),
                        ("nope.pt", "does not exist")):
        with pytest.raises(recipes.common.RecipeError, match=words) as info:
            recipes.checkpoints.load_checkpoint(tmp_path / name, _config())
        assert "\n" not in str(info.value)


def test_a_checkpoint_round_trips_as_plain_data(recipes: Any, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    state = _checkpoint(recipes, _config())
    recipes.checkpoints.save_checkpoint(path, state)
    # train.epochs and train.out may change on resume; nothing else
    now = _config(epochs=5)
    now["train"]["out"] = "elsewhere"
    got = recipes.checkpoints.load_checkpoint(path, now)
    assert got["format"] == recipes.checkpoints.CHECKPOINT_FORMAT and got["step"] == 3
    assert got["config"] == state["config"]
    for k, v in state["model"].items():
        assert torch.equal(got["model"][k], v)


def test_an_old_format_checkpoint_is_refused_with_the_way_forward(recipes: Any, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    old = {**_checkpoint(recipes, _config()), "config_hash": "fe01"}  # the layout before the format field
    torch.save(old, path)
    with pytest.raises(recipes.common.RecipeError, match="no 'format' field") as info:
        recipes.checkpoints.load_checkpoint(path, _config())
    assert f"upgrade-checkpoint {path}" in str(info.value) and "\n" not in str(info.value)
    assert "upgraded" in recipes.checkpoints.upgrade_checkpoint(path)
    got = recipes.checkpoints.load_checkpoint(path, _config())
    assert "config_hash" not in got and got["step"] == 3
    assert "unchanged" in recipes.checkpoints.upgrade_checkpoint(path)
    torch.save({**old, "format": 7}, path)
    with pytest.raises(recipes.common.RecipeError, match="format 7"):
        recipes.checkpoints.load_checkpoint(path, _config())


def test_a_config_mismatch_names_the_keys(recipes: Any, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    recipes.checkpoints.save_checkpoint(path, _checkpoint(recipes, _config()))
    now = _config(lr=0.1, epochs=9)
    now["data"]["args"]["sizes"] = [40, 64]
    with pytest.raises(recipes.common.RecipeError) as info:
        recipes.checkpoints.load_checkpoint(path, now)
    msg = str(info.value)
    assert "optimizer.args.lr is 0.003 there, 0.1 now" in msg, msg
    assert "data.args.sizes is [40, 56] there, [40, 64] now" in msg, msg
    assert "train.epochs" not in msg and "hash" not in msg and "\n" not in msg
    assert "--set data.args.sizes=[40,56] --set optimizer.args.lr=0.003" in msg


def test_a_damaged_field_is_named(recipes: Any, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    recipes.checkpoints.save_checkpoint(path, {**_checkpoint(recipes, _config()), "step": "3"})
    with pytest.raises(recipes.common.RecipeError, match="field 'step'"):
        recipes.checkpoints.load_checkpoint(path, _config())


def test_pretrained_takes_a_recipe_checkpoint_and_reports_what_it_loaded(recipes: Any, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    state = _checkpoint(recipes, _config())
    recipes.checkpoints.save_checkpoint(path, state)
    model = recipes.models.SmallCNN(3, width=8)
    n = len(model.state_dict())
    line = recipes.checkpoints.load_pretrained(model, path, "model.type 'SmallCNN'")
    assert line.startswith(f"--pretrained: loaded {n} of {n} tensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["model"][k]), k

    other = recipes.models.SmallCNN(5, width=8)  # another number of classes: the head keeps its own values
    head = other.head.weight.detach().clone()
    line = recipes.checkpoints.load_pretrained(other, path, "model.type 'SmallCNN'")
    assert f"loaded {n - 2} of {n} tensors" in line and "head.weight" in line and "head.bias" in line
    assert torch.equal(other.head.weight, head)
    assert torch.equal(other.features[0].weight, state["model"]["features.0.weight"])


def test_pretrained_refuses_a_file_that_matches_nothing(recipes: Any, tmp_path: Path) -> None:
    from torchvision.models import resnet18

    path = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(recipes.common.RecipeError, match="matches none of the") as info:
        recipes.checkpoints.load_pretrained(recipes.models.SmallCNN(3, width=8), path, "model.type 'SmallCNN'")
    assert "model.type" in str(info.value) and "\n" not in str(info.value)
    model = recipes.models.resnet18(3)
    n = len(model.state_dict())
    line = recipes.checkpoints.load_pretrained(model, path, "model.type 'resnet18'")
    assert f"loaded {n - 2} of {n} tensors" in line and "fc.weight" in line  # the 1000-class head is not taken
    with pytest.raises(recipes.common.RecipeError, match="does not exist"):
        recipes.checkpoints.load_pretrained(nn.Linear(2, 2), tmp_path / "nope.pth", "a model")


def test_freeze_backbone_trains_only_the_head(recipes: Any) -> None:
    model = recipes.models.SmallCNN(3, width=8)
    recipes.models.freeze_backbone(model, "head")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    with pytest.raises(ValueError, match="head"):
        recipes.models.freeze_backbone(model, "fc")


def test_upgrade_command_is_the_one_the_error_names(recipes: Any, tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "checkpoint.pt"
    torch.save(_checkpoint(recipes, _config()), path)
    res = subprocess.run([sys.executable, str(RECIPES / "checkpoints.py"), "upgrade-checkpoint", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "upgraded to format 2" in res.stdout
    assert recipes.checkpoints.load_checkpoint(path, _config())["step"] == 3
