"""Plumbing shared by the recipes: config with command-line overrides, distributed
set-up, metrics, checkpoints, JSONL logging and plots.

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
import time
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


def _valid_keys(cfg: Any, prefix: str = "") -> list[str]:
    if not isinstance(cfg, dict):
        return [prefix.rstrip(".")]
    keys = []
    for k, v in cfg.items():
        keys.extend(_valid_keys(v, f"{prefix}{k}."))
    return keys


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
                valid = ", ".join(_valid_keys(cfg))
                raise RecipeError(f"unknown config key {key!r}; valid keys: {valid}")
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return cfg


def config_hash(cfg: dict[str, Any], ignore: tuple[str, ...] = ("train.epochs", "train.out", "train.max_steps")) -> str:
    """Hash of the parts of the config that must match for a resume to be exact."""
    c = copy.deepcopy(cfg)
    for key in ignore:
        node = c
        *head, last = key.split(".")
        for h in head:
            node = node.get(h, {})
        node.pop(last, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]


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


# ----------------------------------------------------------------------------- logging, checkpoints


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


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str], cfg_hash: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"--resume checkpoint does not exist: {str(p)!r}")
    state = torch.load(p, map_location="cpu", weights_only=False)
    if state.get("config_hash") != cfg_hash:
        raise RecipeError(
            f"checkpoint {str(p)!r} was written with another config "
            f"(hash {state.get('config_hash')} != {cfg_hash}); resume with the same config"
        )
    return state


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


# ----------------------------------------------------------------------------- the run


def prepare_run(args: argparse.Namespace) -> tuple[dict[str, Any], Path, str, dict[str, Any] | None]:
    """Config with overrides, output folder, config hash and the checkpoint to resume from.

    A run never overwrites an existing checkpoint unless it resumes from it.
    """
    cfg = apply_overrides(load_config(args.config), args.set)
    if args.data:
        cfg["data"]["args"]["path"] = args.data
    if args.out:
        cfg["train"]["out"] = args.out
    out = Path(cfg["train"]["out"])
    chash = config_hash(cfg)
    if args.resume:
        return cfg, out, chash, load_checkpoint(args.resume, chash)
    if (out / "checkpoint.pt").exists():
        raise RecipeError(f"{str(out / 'checkpoint.pt')!r} exists: pass --resume {out / 'checkpoint.pt'} "
                          "or choose another --out")
    return cfg, out, chash, None


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, num_classes: int, predict: Any) -> dict[str, Any]:
    """Metrics over ``loader`` (each rank its part; confusion matrices summed over ranks)."""
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for batch in loader:
        preds, targets = predict(batch)
        cm += confusion_matrix(preds.cpu(), targets.cpu(), num_classes)
    model.train()
    return classification_metrics(all_reduce_sum(cm))


def fit(*, cfg: dict[str, Any], out: Path, chash: str, state: dict[str, Any] | None, rank: int,
        model: torch.nn.Module, opt: torch.optim.Optimizer, loader: Any, val_loader: Any,
        step_loss: Any, predict: Any, num_classes: int, class_names: list[str],
        extra_state: dict[str, Any] | None = None) -> None:
    """Train for ``train.epochs`` epochs: log, evaluate each epoch, checkpoint, resume.

    ``step_loss(batch)`` returns the loss of a batch (through the DDP model when
    distributed); ``predict(batch)`` returns ``(predictions, targets)``.
    """
    from tqdm import tqdm

    tr = cfg["train"]
    ckpt_path = out / "checkpoint.pt"
    step, start_epoch = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        step, start_epoch = state["step"], state["loader"]["epoch"]
    log = MetricsLog(out / "metrics.jsonl", enabled=rank == 0, append=state is not None)

    def checkpoint() -> None:
        if rank == 0:
            save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                        "loader": loader.state_dict(), "step": step, "config_hash": chash,
                                        "config": cfg, **(extra_state or {})})

    max_steps = tr["max_steps"]
    t0 = time.perf_counter()
    for epoch in range(start_epoch, tr["epochs"]):
        loader.set_epoch(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=rank != 0, leave=False)
        for batch in bar:
            loss = step_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % tr["log_every"] == 0:
                log.write({"kind": "step", "step": step, "epoch": epoch, "loss": round(loss.item(), 6)})
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % tr["checkpoint_every"] == 0 or step == max_steps:
                checkpoint()
            if max_steps is not None and step >= max_steps:
                print(f"stopped at max_steps={max_steps}; resume with --resume {ckpt_path}")
                return
        metrics = evaluate(model, val_loader, num_classes, predict)
        stats = loader.stats()
        log.write({"kind": "epoch", "epoch": epoch, "step": step, **metrics,
                   "samples_per_s": stats.get("samples_per_s"), "wait_fraction": stats.get("wait_fraction"),
                   "elapsed_s": round(time.perf_counter() - t0, 2)})
        if rank == 0:
            recalls = [r for r in metrics["per_class_recall"] if r is not None]
            print(f"epoch {epoch}: val accuracy {metrics['accuracy']:.3f}, balanced accuracy "
                  f"{metrics['balanced_accuracy']:.3f}, min class recall {min(recalls):.3f}")
        checkpoint()
    if rank == 0:
        png = plot_metrics(read_metrics(out / "metrics.jsonl"), out / "metrics.png", class_names)
        print(f"done in {time.perf_counter() - t0:.1f}s; metrics: {out / 'metrics.jsonl'}"
              + (f", plot: {png}" if png else ""))
