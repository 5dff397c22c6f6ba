"""Image classification with dataforge, end to end.

    python recipes/image_classification.py                      # long-tail demo data
    python recipes/image_classification.py --data path/to/folder  # your ImageFolder
    python recipes/image_classification.py --set sampler.type=shuffle --set train.epochs=3
    python recipes/image_classification.py --resume runs/image/checkpoint.pt  # continues in runs/image
    torchrun --nproc_per_node=2 recipes/image_classification.py    # DDP (gloo on CPU)

Data: an ImageFolder (``root/<class>/*.jpg``) split stratified into train/val.
Sampling: ``ClassBalancedSampler`` (or plain shuffle), the same order on every
rank for an epoch, each rank a disjoint slice. Images stay uint8 until they are on
the device, where they are converted and normalized as one batch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import SequentialSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoints import load_pretrained  # noqa: E402
from common import (  # noqa: E402
    RecipeError,
    base_parser,
    cleanup_distributed,
    demo_data,
    pick_device,
    run_main,
    setup_distributed,
)
from models import SmallCNN, freeze_backbone, resnet18  # noqa: E402
from training import fit, prepare_run  # noqa: E402

import dataforge  # noqa: E402
from dataforge.transforms import batch as B  # noqa: E402
from dataforge.transforms.image import eval_transforms, train_transforms, with_decode  # noqa: E402

HERE = Path(__file__).resolve().parent


def demo_folder(demo: dict[str, Any], rank: int) -> Path:
    """The long-tail demo image folder, generated once."""
    from dataforge.synthetic import make_image_folder

    return demo_data("images", demo, rank, lambda root: make_image_folder(
        root, num_images=demo["num_images"], num_classes=demo["num_classes"], imbalance=demo["imbalance"],
        sizes=tuple(demo["sizes"]), seed=0, difficulty=demo.get("difficulty", 0.0)))


def build_transforms(cfg: dict[str, Any]) -> tuple[Any, Any]:
    kind, a = cfg["transforms"]["type"], cfg["transforms"]["args"]
    if kind == "uint8":
        return (train_transforms(a["size"], scale=tuple(a["scale"])),
                eval_transforms(a["size"], resize=a["resize"]))
    if kind == "albumentations":
        try:
            import albumentations as A
        except ImportError:
            raise RecipeError("transforms.type 'albumentations' needs: pip install dataforge[albumentations]") from None
        from dataforge.transforms.albumentations import Albumentations

        train = Albumentations(A.Compose([
            A.RandomResizedCrop(size=(a["size"], a["size"]), scale=tuple(a["scale"])),
            A.HorizontalFlip(p=0.5),
        ]))
        val = Albumentations(A.Compose([
            A.SmallestMaxSize(max_size=a["resize"]), A.CenterCrop(height=a["size"], width=a["size"]),
        ]))
        return train, val
    raise RecipeError(f"transforms.type must be 'uint8' or 'albumentations', got {kind!r}")


def build_sampler(cfg: dict[str, Any], labels: np.ndarray, seed: int) -> Any:
    kind, a = cfg["sampler"]["type"], cfg["sampler"]["args"]
    if kind == "ClassBalancedSampler":
        # num_samples null: an epoch draws as many samples as the train split holds, so a
        # balanced run and a shuffled run compare at equal compute per epoch
        num_samples = a["num_samples"] if a["num_samples"] is not None else len(labels)
        return dataforge.ClassBalancedSampler(labels, strategy=a["strategy"], num_samples=num_samples,
                                              seed=seed)
    if kind == "shuffle":  # uniform without replacement = a plain shuffle, rank-aware and resumable
        return dataforge.WeightedSampler(np.ones(len(labels)), num_samples=len(labels), replacement=False,
                                         seed=seed)
    raise RecipeError(f"sampler.type must be 'ClassBalancedSampler' or 'shuffle', got {kind!r}")


def build_model(cfg: dict[str, Any], num_classes: int, args: Any, resuming: bool, rank: int) -> nn.Module:
    """The model, with ``--pretrained`` weights (unless resuming: the checkpoint's
    weights replace them) and ``--freeze-backbone`` applied."""
    kind, a = cfg["model"]["type"], cfg["model"]["args"]
    model: nn.Module
    if kind == "SmallCNN":
        model, head = SmallCNN(num_classes, **a), "head"
    elif kind == "resnet18":
        model, head = resnet18(num_classes), "fc"
    else:
        raise RecipeError(f"model.type must be 'SmallCNN' or 'resnet18', got {kind!r}")
    if args.pretrained:
        line = (f"--pretrained {args.pretrained} not loaded: resuming, the checkpoint's weights are used"
                if resuming else load_pretrained(model, args.pretrained, f"model.type {kind!r}"))
        if rank == 0:
            print(line)
    if args.freeze_backbone:
        freeze_backbone(model, head)
    return model


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], HERE / "configs" / "image.json")
    parser.add_argument("--pretrained", default=None,
                        help="initial weights: a local state_dict for model.type (e.g. resnet18.pth with "
                             "--set model.type=resnet18) or a recipe checkpoint.pt")
    parser.add_argument("--freeze-backbone", action="store_true", help="train only the classifier head")
    args = parser.parse_args()
    cfg, out, state = prepare_run(args)
    seed = int(cfg["train"]["seed"])
    rank, world, local_rank = setup_distributed()
    device = pick_device(cfg["train"]["device"], local_rank)
    torch.manual_seed(seed)

    path = cfg["data"]["args"]["path"]
    root = Path(path) if path else demo_folder(cfg["data"]["args"]["demo"], rank)
    try:
        full = dataforge.ImageFolder(root, decode=False)  # the transforms decode (only the crop)
    except (FileNotFoundError, ValueError) as exc:
        raise RecipeError(f"data: {exc}") from None
    vf = cfg["data"]["args"]["val_fraction"]
    train_ds, val_ds = full.split([1 - vf, vf], seed=seed, stratify=True)
    tf_train, tf_val = (with_decode(t) for t in build_transforms(cfg))
    train_ds = train_ds.map(tf_train, seed=seed)
    val_ds = val_ds.subset(np.arange(rank, len(val_ds), world)).map(tf_val)  # each rank a disjoint part

    on_device = B.Compose([B.ToFloat(), B.Normalize()])
    lc = cfg["loader"]
    sampler = build_sampler(cfg, train_ds.labels, seed)
    loader = dataforge.build_loader(train_ds, lc["batch_size"], sampler=sampler, num_workers=lc["num_workers"],
                                    engine=lc["engine"], device=device, batch_transforms=on_device,
                                    seed=seed, drop_last=True)
    # val_ds is already this rank's part: an explicit in-order sampler says so to build_loader
    val_loader = dataforge.build_loader(val_ds, lc["batch_size"], sampler=SequentialSampler(val_ds),
                                        num_workers=lc["num_workers"], engine=lc["engine"], device=device,
                                        batch_transforms=on_device)
    num_classes = len(full.classes)
    model = build_model(cfg, num_classes, args, state is not None, rank).to(device)
    opt_cls = getattr(torch.optim, cfg["optimizer"]["type"])
    opt = opt_cls([p for p in model.parameters() if p.requires_grad], **cfg["optimizer"]["args"])
    ddp_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def step_loss(batch: Any) -> torch.Tensor:
        return nn.functional.cross_entropy(ddp_model(batch["image"]), batch["label"])

    def predict(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return model(batch["image"]).argmax(1), batch["label"]

    try:
        fit(cfg=cfg, out=out, state=state, rank=rank, model=model, opt=opt, loader=loader,
            val_loader=val_loader, step_loss=step_loss, predict=predict, num_classes=num_classes,
            class_names=list(full.classes))
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    raise SystemExit(run_main(main))
