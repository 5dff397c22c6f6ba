from __future__ import annotations

import numpy as np
import pytest
import torch

A = pytest.importorskip("albumentations")

from dataforge.transforms.albumentations import Albumentations  # noqa: E402


def _hwc(h: int = 40, w: int = 52, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


@pytest.mark.parametrize(
    "op",
    [
        lambda: A.Resize(20, 30),
        lambda: A.CenterCrop(16, 16),
        lambda: A.HorizontalFlip(p=1.0),
        lambda: A.Normalize(),
    ],
    ids=["resize", "center_crop", "hflip", "normalize"],
)
def test_adapter_agrees_with_direct_call(op):
    img = _hwc()
    ref = A.Compose([op()])(image=img)["image"]
    out = Albumentations(A.Compose([op()]))(_chw(img))
    assert out.shape == (ref.shape[2], ref.shape[0], ref.shape[1])
    assert out.dtype == torch.from_numpy(ref).dtype
    assert torch.equal(out, _chw(ref))
    # numpy HWC input and sample dicts follow the same convention
    assert torch.equal(Albumentations(A.Compose([op()]))(img), _chw(ref))
    d = Albumentations(A.Compose([op()]))({"image": _chw(img), "label": 4})
    assert d["label"] == 4 and torch.equal(d["image"], _chw(ref))


def test_uint8_stays_uint8_and_grayscale_works():
    t = Albumentations(A.Compose([A.HorizontalFlip(p=1.0)]))
    assert t(_chw(_hwc())).dtype == torch.uint8
    gray = torch.randint(0, 256, (1, 8, 9), dtype=torch.uint8)
    assert torch.equal(t(gray), gray.flip(-1))


def test_randomness_reproducible_per_generator_and_per_global_seed():
    t = Albumentations(A.Compose([A.RandomResizedCrop((16, 16)), A.HorizontalFlip()]))
    x = _chw(_hwc())
    a = t(x, generator=torch.Generator().manual_seed(1))
    b = t(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    outs = {t(x, generator=torch.Generator().manual_seed(s)).sum().item() for s in range(6)}
    assert len(outs) > 1
    torch.manual_seed(5)
    c = t(x)
    torch.manual_seed(5)
    assert torch.equal(c, t(x))  # MapDataset.map(seed=) seeds torch's global RNG per sample


def test_errors():
    t = Albumentations(A.Compose([A.HorizontalFlip(p=1.0)]))
    with pytest.raises(TypeError, match="CHW torch.Tensor"):
        t([1, 2, 3])
    with pytest.raises(ValueError, match="shape"):
        t(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(KeyError, match="'image'"):
        t({"img": torch.zeros(3, 4, 4, dtype=torch.uint8)})
    with pytest.raises(TypeError, match="albumentations transform"):
        Albumentations(3)


def test_lazy_reexport_from_image_module():
    from dataforge.transforms import image

    assert image.Albumentations is Albumentations
