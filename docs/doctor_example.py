"""The pipeline behind the doctor report in the README and docs/doctor.md.

An image-classification input pipeline written the classic way: every image decoded
whole, then a per-sample float crop, colour jitter and normalization, one worker.
Its factory takes the knobs the doctor tries (NOTE [rebuild rule] in
``dataforge/doctor/trials.py``):

- ``crop_decode=True``: dataforge's ``train_transforms``, which decodes only the crop
  and keeps the image uint8, then the same float steps per sample;
- ``transform_on_device=True``: uint8 crop per sample, then the float steps as batch
  transforms on the device (CUDA when there is one, else the CPU).

Run:
    $ dataforge doctor docs/doctor_example.py:make_loader --seconds 10 --step-ms 40 \\
          --png docs/doctor.png --trace doctor-trace.json

The demo images (800 JPEGs, 300-500 px) are written to ``.cache/doctor-demo`` on
the first call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2

import dataforge
from dataforge.synthetic import make_image_folder
from dataforge.transforms.batch import Normalize, RandomBrightnessContrast, ToFloat
from dataforge.transforms.presets import train_transforms

DATA = Path(".cache/doctor-demo")
SIZE = 160
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _float_steps() -> list[Any]:
    return [v2.ToDtype(torch.float32, scale=True), v2.ColorJitter(brightness=0.3, contrast=0.3),
            v2.Normalize(MEAN, STD)]


def make_loader(num_workers: int = 1, engine: str = "process", crop_decode: bool = False,
                transform_on_device: bool = False, **kw: Any) -> dataforge.Loader:
    """The demo loader; the keyword arguments are the knobs the doctor may change."""
    root = DATA if DATA.exists() else make_image_folder(DATA, num_images=800, progress=False)
    device = "cuda" if torch.cuda.is_available() else None
    if transform_on_device:
        ds = dataforge.ImageFolder(root, train_transforms(SIZE))
        batch = [ToFloat(), RandomBrightnessContrast(brightness=0.3, contrast=0.3, seed=0),
                 Normalize(MEAN, STD)]
        return dataforge.build_loader(ds, 64, shuffle=True, num_workers=num_workers, engine=engine,
                                      device=device, batch_transforms=batch, **kw)
    crop = train_transforms(SIZE) if crop_decode else v2.Compose(
        [v2.RandomResizedCrop(SIZE, antialias=True), v2.RandomHorizontalFlip()])
    ds = dataforge.ImageFolder(root, v2.Compose([crop, *_float_steps()]) if not crop_decode
                               else _Then(crop, v2.Compose(_float_steps())))
    return dataforge.build_loader(ds, 64, shuffle=True, num_workers=num_workers, engine=engine,
                                  device=device, **kw)


class _Then:
    """``second(first(x))``, keeping ``first``'s ``accepts_encoded`` (so ``ImageFolder``
    gives it the file and it decodes only the crop)."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second
        self.accepts_encoded = getattr(first, "accepts_encoded", False)

    def __call__(self, x: Any) -> Any:
        return self.second(self.first(x))
