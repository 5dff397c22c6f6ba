"""Plumbing shared by the recipes: config with command-line overrides, distributed
set-up, metrics, JSONL logging and plots.

Recipes are meant to be copied: this file goes with them.
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


class RecipeError(Exception):
    """A user error: printed on one line, exit code 2."""


# ----------------------------------------------------------------------------- config


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"config file does not exist: {str(p)!r}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise RecipeError(f"config {str(p)!r} is not valid JSON: {exc}") from None


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """The config's leaves by dotted key: ``{"train.epochs": 10, ...}``."""
    if isinstance(cfg, dict) and cfg:
        leaves: dict[str, Any] = {}
        for k, v in cfg.items():
            leaves.update(flatten(v, f"{prefix}{k}."))
        return leaves
    return {prefix.rstrip("."): cfg}


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as JSON, else a string).

    Only existing keys may be set, so a typo is an error that lists the valid keys.
    """
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = cfg
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                valid = ", ".join(flatten(cfg))
                raise RecipeError(f"unknown config key {key!r}; valid keys: {valid}")
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return cfg


def base_parser(description: str, default_config: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=str(default_config), help="JSON config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--data", default=None, help="your data (overrides data.args.path)")
    p.add_argument("--out", default=None, help="output folder (overrides train.out)")
    p.add_argument("--resume", default=None, help="checkpoint to resume from")
    return p


def run_main(fn: Any) -> int:
    """Run a recipe's main, turning RecipeError into a one-line message and exit code 2.

    NOTE [distributed teardown]: after ``fn`` returns, its model, DDP wrapper and
    loaders can still be alive in reference cycles (the training closures hold the
    DDP model; measured: it outlives ``main`` until the next garbage collection).
    DDP's reducer holds the gloo process group, so without a collection here they
    would be freed during interpreter shutdown, where a C++ destructor that needs
    the GIL can abort the process ("terminate called without an active exception",
    seen once in CI on rank 1 of the text recipe under torchrun). Collecting
    here frees them while the interpreter is whole.
    """
    try:
        fn()
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        gc.collect()
    return 0


# ----------------------------------------------------------------------------- demo data


def demo_data(name: str, params: dict[str, Any], rank: int, make: Any, suffix: str = "") -> Path:
    """Generate demo data once with ``make(path)`` (rank 0, the others wait), cached under
    ``$DATAFORGE_CACHE`` (default ``~/.cache/dataforge``) by its parameters."""
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    cache = Path(os.environ.get("DATAFORGE_CACHE", Path.home() / ".cache" / "dataforge"))
    path = cache / "recipes" / f"{name}-{key}{suffix}"
    done = path.with_name(path.name + ".complete")
    if rank == 0 and not done.exists():
        make(path)
        done.touch()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return path


# ----------------------------------------------------------------------------- distributed


def setup_distributed() -> tuple[int, int, int]:
    """Initialise torch.distributed under torchrun (gloo on CPU, nccl on GPU).

    Returns ``(rank, world_size, local_rank)``; ``(0, 1, 0)`` without torchrun.
    """
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RecipeError("train.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


# ----------------------------------------------------------------------------- metrics


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    idx = targets.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(cm: torch.Tensor) -> dict[str, Any]:
    """Accuracy, per-class recall and balanced accuracy (mean recall over present classes)."""
    cm = cm.double()
    support = cm.sum(1)
    recall = torch.where(support > 0, cm.diag() / support.clamp(min=1), torch.full_like(support, float("nan")))
    present = support > 0
    return {
        "accuracy": float(cm.diag().sum() / cm.sum().clamp(min=1)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "per_class_recall": [None if np.isnan(r) else round(float(r), 4) for r in recall.tolist()],
    }


# ----------------------------------------------------------------------------- logging, plots


class MetricsLog:
    """Appends one JSON object per line; rank 0 only."""

    def __init__(self, path: Path, enabled: bool = True, append: bool = False) -> None:
        self.path = path
        self.enabled = enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not append:
                path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_metrics(records: list[dict[str, Any]], out: Path, class_names: list[str]) -> Path | None:
    """Loss, balanced accuracy and per-class recall by epoch, to a PNG (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install dataforge[bench])", file=sys.stderr)
        return None
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if steps:
        axes[0].plot([r["step"] for r in steps], [r["loss"] for r in steps])
    axes[0].set(title="training loss", xlabel="step")
    if epochs:
        axes[1].plot([r["epoch"] for r in epochs], [r["balanced_accuracy"] for r in epochs], marker="o")
        recalls = np.array([[np.nan if v is None else v for v in r["per_class_recall"]] for r in epochs])
        for c in range(recalls.shape[1]):
            label = class_names[c] if c < len(class_names) else str(c)
            axes[2].plot([r["epoch"] for r in epochs], recalls[:, c], marker=".", label=label)
        if recalls.shape[1] <= 12:
            axes[2].legend(fontsize=7)
    axes[1].set(title="balanced accuracy (val)", xlabel="epoch", ylim=(0, 1))
    axes[2].set(title="per-class recall (val)", xlabel="epoch", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
