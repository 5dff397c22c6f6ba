"""The training loop shared by the recipes: run preparation (config, output folder,
resume), evaluation, checkpointing and the final report.

Recipes are meant to be copied: this file goes with them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoints import load_checkpoint, one_line, save_checkpoint  # noqa: E402
from common import (  # noqa: E402
    MetricsLog,
    RecipeError,
    all_reduce_sum,
    apply_overrides,
    classification_metrics,
    confusion_matrix,
    load_config,
    plot_metrics,
    read_metrics,
)


def prepare_run(args: argparse.Namespace) -> tuple[dict[str, Any], Path, dict[str, Any] | None]:
    """Config with overrides, output folder and the checkpoint to resume from (checked
    against the config).

    NOTE [resume folder]: a resumed run continues in its checkpoint's folder, so the
    run's metrics, plot and tokenizer stay together; ``--out`` (or ``train.out``)
    given explicitly writes elsewhere. A run never overwrites a checkpoint other than
    the one it resumes from.
    """
    cfg = apply_overrides(load_config(args.config), args.set)
    if args.data:
        cfg["data"]["args"]["path"] = args.data
    if args.out:
        cfg["train"]["out"] = args.out
    state = None
    if args.resume:
        state = load_checkpoint(args.resume, cfg)
        if not (args.out or any(item.split("=", 1)[0] == "train.out" for item in args.set)):
            cfg["train"]["out"] = str(Path(args.resume).parent)
    out = Path(cfg["train"]["out"])
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not (args.resume and ckpt.samefile(args.resume)):
        raise RecipeError(f"{str(ckpt)!r} exists: pass --resume {ckpt} or choose another --out")
    return cfg, out, state


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


def _summary(metrics: dict[str, Any]) -> str:
    recalls = [r for r in metrics["per_class_recall"] if r is not None]
    return (f"val accuracy {metrics['accuracy']:.3f}, balanced accuracy {metrics['balanced_accuracy']:.3f}"
            + (f", min class recall {min(recalls):.3f}" if recalls else ""))


def _report(rank: int, out: Path, class_names: list[str], headline: str) -> None:
    """Rank 0: plot the run's metrics and print what happened and where the files are."""
    if rank != 0:
        return
    path = out / "metrics.jsonl"
    png = plot_metrics(read_metrics(path) if path.is_file() else [], out / "metrics.png", class_names)
    print(f"{headline}; metrics: {path}" + (f", plot: {png}" if png else ""))


def _restore(state: dict[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer, loader: Any) -> None:
    """Load a checkpoint's parts; a part that does not fit is a one-line error naming it."""
    for name, part, fix in (
        ("model", model, "resume with the same model options (model.type, --hf-model)"),
        ("optimizer", opt, "resume with the same optimizer and trainable parameters (--freeze-backbone)"),
        ("loader", loader, "resume with the same data and loader settings"),
    ):
        try:
            part.load_state_dict(state[name])
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise RecipeError(f"--resume: the checkpoint's {name} state does not fit this run "
                              f"({one_line(exc)}); {fix}") from None


def fit(*, cfg: dict[str, Any], out: Path, state: dict[str, Any] | None, rank: int,
        model: torch.nn.Module, opt: torch.optim.Optimizer, loader: Any, val_loader: Any,
        step_loss: Any, predict: Any, num_classes: int, class_names: list[str],
        extra_state: dict[str, Any] | None = None) -> None:
    """Train for ``train.epochs`` epochs: log, evaluate each epoch, checkpoint, resume.

    Every ending (done, stopped by ``train.max_steps``, nothing left to train) says
    what happened and writes the plot. ``step_loss(batch)`` returns the loss of a
    batch (through the DDP model when distributed); ``predict(batch)`` returns
    ``(predictions, targets)``.
    """
    from tqdm import tqdm

    tr = cfg["train"]
    ckpt_path = out / "checkpoint.pt"
    step, start_epoch = 0, 0
    if state is not None:
        _restore(state, model, opt, loader)
        step, start_epoch = state["step"], state["loader"]["epoch"]
    log = MetricsLog(out / "metrics.jsonl", enabled=rank == 0, append=state is not None)
    max_steps = tr["max_steps"]
    if start_epoch >= tr["epochs"]:
        _report(rank, out, class_names, f"nothing to train: the checkpoint finished epoch {start_epoch - 1} "
                                        f"(step {step}) and train.epochs is {tr['epochs']}; raise it to train further")
        return
    if max_steps is not None and step >= max_steps:
        _report(rank, out, class_names, f"nothing to train: the checkpoint is at step {step} (epoch {start_epoch}) "
                                        f"and train.max_steps is {max_steps}; raise it, or --set "
                                        "train.max_steps=null, to train further")
        return
    if state is not None and rank == 0:
        print(f"resuming at epoch {start_epoch}, step {step}, in {out}")

    def checkpoint() -> None:
        if rank == 0:
            save_checkpoint(ckpt_path, {"config": cfg, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                        "loader": loader.state_dict(), "step": step, **(extra_state or {})})

    t0 = time.perf_counter()
    stopped = False
    epoch = start_epoch
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
                stopped = True
                break
        bar.close()
        if stopped:
            break
        metrics = evaluate(model, val_loader, num_classes, predict)
        stats = loader.stats()
        log.write({"kind": "epoch", "epoch": epoch, "step": step, **metrics,
                   "samples_per_s": stats.get("samples_per_s"), "wait_fraction": stats.get("wait_fraction"),
                   "elapsed_s": round(time.perf_counter() - t0, 2)})
        if rank == 0:
            print(f"epoch {epoch}: {_summary(metrics)}")
        checkpoint()
    elapsed = time.perf_counter() - t0
    if stopped:
        metrics = evaluate(model, val_loader, num_classes, predict)
        log.write({"kind": "stop", "reason": "train.max_steps", "epoch": epoch, "step": step, **metrics,
                   "elapsed_s": round(elapsed, 2)})
        headline = (f"stopped at train.max_steps={max_steps} (epoch {epoch}, step {step}, {elapsed:.1f}s): "
                    f"{_summary(metrics)}; checkpoint {ckpt_path} (continue with --resume {ckpt_path} "
                    "--set train.max_steps=null)")
    else:
        headline = f"done: {tr['epochs']} epochs ({step} steps) in {elapsed:.1f}s"
    _report(rank, out, class_names, headline)
