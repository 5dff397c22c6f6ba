from __future__ import annotations

import io

import pytest
import torch
from helpers import torchvision_crop
from PIL import Image
from torchvision.transforms import v2

from dataforge.transforms.image import (
    Decode,
    ImageDecodeError,
    Torchvision,
    eval_transforms,
    train_transforms,
)


def _image(h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("size", [32, (24, 40)])
def test_train_preset_shape_dtype_range(size):
    t = train_transforms(size)
    x = _image() // 2 + 50  # values in [50, 177]
    out = t(x, generator=torch.Generator().manual_seed(0))
    hw = (size, size) if isinstance(size, int) else size
    assert out.shape == (3, *hw) and out.dtype == torch.uint8
    assert int(out.min()) >= 50 and int(out.max()) <= 177  # crop + resize stays in range


def test_eval_preset_matches_torchvision_and_is_deterministic():
    x = _image(60, 90)
    ref = v2.CenterCrop(32)(v2.Resize(36, antialias=True)(x))
    out = eval_transforms(32, resize=36)(x)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert torch.equal(out, ref)


def test_sample_dict_passes_other_keys_and_is_not_mutated():
    sample = {"image": _image(), "label": 3, "path": "a.jpg"}
    out = train_transforms(16)(sample, generator=torch.Generator().manual_seed(0))
    assert out["label"] == 3 and out["path"] == "a.jpg" and out["image"].shape == (3, 16, 16)
    assert sample["image"].shape == (3, 48, 64)
    with pytest.raises(KeyError, match="'img'"):
        Torchvision(v2.CenterCrop(2), key="img")({"image": _image()})


def test_generator_reproduces_and_varies():
    t = train_transforms(16)
    x = _image()
    a = t(x, generator=torch.Generator().manual_seed(1))
    b = t(x, generator=torch.Generator().manual_seed(1))
    outs = {t(x, generator=torch.Generator().manual_seed(s)).sum().item() for s in range(8)}
    assert torch.equal(a, b) and len(outs) > 1


def test_preset_without_generator_draws_one_seed_from_the_global_rng():
    # NOTE [crop draws]: one torch draw from the global RNG seeds the crop and the flip.
    x, t = _image(), train_transforms(16)
    torch.manual_seed(123)
    a = t(x)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(t(x), a)
    torch.manual_seed(123)
    torch.randint(0, 1 << 62, (1,))
    assert torch.equal(torch.rand(1), after)


@pytest.mark.parametrize("seed", range(6))
def test_generator_draws_give_torchvision_pixels_and_leave_the_global_rng_alone(seed):
    x, t = _image(), train_transforms(16)
    draw = t.draw(48, 64, torch.Generator().manual_seed(seed))
    torch.manual_seed(999)
    before = torch.get_rng_state()
    out = t(x, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(out, torchvision_crop(x, 16, draw))
    assert torch.equal(torch.get_rng_state(), before)  # neither read nor seeded


@pytest.mark.parametrize(
    "op",
    [
        v2.Resize((20, 30), antialias=True),
        v2.CenterCrop(10),
        v2.RandomHorizontalFlip(p=1.0),
        v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.2] * 3)]),
    ],
)
def test_torchvision_adapter_agrees_with_direct_call(op):
    x = _image()
    assert torch.equal(Torchvision(op)(x), op(x))
    assert torch.equal(Torchvision(op)({"image": x})["image"], op(x))


def test_mapdataset_seed_gives_same_output_for_any_worker_count():
    ms = pytest.importorskip("dataforge.datasets.map_style")
    images = [_image(40 + i, 50 + 2 * i, seed=i) for i in range(8)]
    ds = ms.from_sequence(images).map(train_transforms(24), seed=0)

    def run(num_workers: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(
            ds, batch_size=3, num_workers=num_workers, timeout=60 if num_workers else 0
        )
        return [x for batch in loader for x in batch]

    a, b = run(0), run(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert len({x.sum().item() for x in a}) > 1


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: train_transforms(0), "size"),
        (lambda: train_transforms(32, scale=(0.5, 1.5)), "scale"),
        (lambda: train_transforms(32, ratio=(2.0, 1.0)), "ratio"),
        (lambda: train_transforms(32, hflip=1.5), "hflip"),
        (lambda: eval_transforms(224, resize=200), "resize=200"),
        (lambda: Decode(mode="CMYK"), "mode"),
        (lambda: Decode(max_pixels=0), "max_pixels"),
    ],
)
def test_bad_arguments(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_torchvision_adapter_rejects_non_callable():
    with pytest.raises(TypeError, match="callable"):
        Torchvision("resize")


def _png(mode: str = "L", size: tuple[int, int] = (5, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, "PNG")
    return buf.getvalue()


def test_decode_bytes_path_and_dict(tmp_path):
    data = _png()
    p = tmp_path / "x.png"
    p.write_bytes(data)
    assert Decode()(data).shape == (3, 4, 5)
    assert Decode(mode="L")(str(p)).shape == (1, 4, 5)
    out = Decode()({"image": p, "label": 2})
    assert out["label"] == 2 and out["image"].dtype == torch.uint8
    with pytest.raises(ImageDecodeError, match="bad.bin"):
        Decode()({"image": b"not an image", "path": "bad.bin"})
    with pytest.raises(ImageDecodeError, match="pixels exceeds"):
        Decode(max_pixels=10)(data)


def test_generator_leaves_global_rng_untouched():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train_transforms(16)(_image(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(3), expected)
