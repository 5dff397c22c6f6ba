"""The crop-aware presets (``RandomResizedCrop``, ``ResizeCenterCrop``): torchvision's
rule and pixels for the same draw, encoded input decoded by region, and the direct resize."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from fuzz import jpeg_corpus as C
from helpers import dense_hwc, torchvision_crop
from torchvision.transforms import v2

import dataforge.transforms.decode as dec
from dataforge.transforms.decode import ImageDecodeError, decode_image
from dataforge.transforms.image import RandomResizedCrop, train_transforms

needs_ext = pytest.mark.skipif(not dec.HAVE_ROI_DECODE, reason="dataforge._jpeg not built")


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"scale": (0.5, 1.0), "ratio": (1.0, 1.0)},
        {"hflip": 0.0},
        {"hflip": 1.0, "scale": (0.9, 1.0)},
        {"scale": (0.99, 1.0), "ratio": (3.0, 4.0)},  # often impossible: central-crop fallback
    ],
)
def test_tensor_input_equals_torchvision_for_the_same_draw(kw):
    img = torch.from_numpy(C.photo(90, 130)).permute(2, 0, 1).contiguous()
    ours = RandomResizedCrop(32, **kw)
    flips = set()
    for seed in range(30):
        draw = ours.draw(90, 130, torch.Generator().manual_seed(seed))
        ref = torchvision_crop(img, 32, draw)
        assert torch.equal(ours(img, generator=torch.Generator().manual_seed(seed)), ref), (kw, seed)
        flips.add(draw[4])
    assert flips == {0.0: {False}, 1.0: {True}}.get(kw.get("hflip", 0.5), {False, True})


def test_params_follow_torchvision_get_params_rule():
    """NOTE [crop draws]: not torchvision's stream, but its rule: the same law of boxes
    (area share, aspect ratio, position) and the same central-crop fallback."""
    from torchvision.transforms import RandomResizedCrop as V1

    ours = RandomResizedCrop(16, scale=(0.2, 0.9), ratio=(0.5, 2.0))
    dummy = torch.empty(1, 1, 1).expand(3, 77, 201)
    torch.manual_seed(0)
    ref = np.array([V1.get_params(dummy, [0.2, 0.9], [0.5, 2.0]) for _ in range(4000)], float)
    g = torch.Generator().manual_seed(0)
    got = np.array([ours.params(77, 201, g) for _ in range(4000)], float)
    assert ((got[:, 0] >= 0) & (got[:, 0] + got[:, 2] <= 77)).all()
    assert ((got[:, 1] >= 0) & (got[:, 1] + got[:, 3] <= 201)).all()

    def stats(b: np.ndarray) -> np.ndarray:  # area share, log aspect, relative centre
        feats = [b[:, 2] * b[:, 3] / (77 * 201), np.log(b[:, 3] / b[:, 2]),
                 (b[:, 0] + b[:, 2] / 2) / 77, (b[:, 1] + b[:, 3] / 2) / 201]
        return np.array([np.quantile(f, [0.1, 0.25, 0.5, 0.75, 0.9]) for f in feats])

    # 4000 draws each: a quantile's standard error is about 0.01 of these features' ranges
    np.testing.assert_allclose(stats(got), stats(ref), atol=0.05)
    impossible = RandomResizedCrop(16, scale=(0.99, 1.0), ratio=(3.0, 4.0))
    square = torch.empty(1, 1, 1).expand(3, 50, 50)
    for seed in range(5):
        assert impossible.params(50, 50, torch.Generator().manual_seed(seed)) == tuple(
            V1.get_params(square, [0.99, 1.0], [3.0, 4.0]))


@pytest.mark.parametrize("variant", ["420", "444", "progressive"])
def test_encoded_input_equals_decode_then_torchvision(tmp_path, variant):
    data = C.pil_jpeg(C.photo(150, 210, seed=5), **C.PIL_VARIANTS[variant])
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    ours = train_transforms(64, reduce=False)
    whole = decode_image(data)
    for seed in range(20):
        torch.manual_seed(seed)  # without a generator, the draw comes from the global RNG
        expected = torchvision_crop(whole, 64, ours.draw(150, 210))
        for src in (data, path, str(path), {"image": data, "path": str(path), "label": 3}):
            torch.manual_seed(seed)
            out = ours(src)
            if isinstance(src, dict):
                assert out["label"] == 3 and out["path"] == str(path)
                out = out["image"]
            assert torch.equal(out, expected), (variant, seed, type(src))


@needs_ext
def test_reduce_decodes_big_crops_at_lower_scale_and_stays_close():
    arr = C.photo(600, 800, seed=6)
    data = C.pil_jpeg(arr)
    big = RandomResizedCrop(64, scale=(0.9, 1.0), hflip=0.0)
    exact = RandomResizedCrop(64, scale=(0.9, 1.0), hflip=0.0, reduce=False)
    for seed in range(5):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        a, b = big(data, generator=g1), exact(data, generator=g2)
        assert a.shape == b.shape == (3, 64, 64)
        assert (a.float() - b.float()).abs().mean() < 4


def test_generator_reproducible_and_varies():
    data = C.pil_jpeg(C.photo(120, 160))
    t = train_transforms(48)
    a = [t(data, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    b = [t(data, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len({x.float().sum().item() for x in a}) > 1


def test_errors_name_the_file(tmp_path):
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"not a jpeg at all")
    t = train_transforms(32)
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        t(p)
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        t({"image": p.read_bytes(), "path": str(p)})
    with pytest.raises(ValueError, match="hflip"):
        RandomResizedCrop(32, hflip=2)
    with pytest.raises(ValueError, match="size"):
        RandomResizedCrop(0)


def test_image_folder_hands_the_file_to_crop_aware_transforms(tmp_path):
    from dataforge import ImageFolder
    from dataforge.synthetic import make_image_folder

    root = make_image_folder(tmp_path, num_images=8, num_classes=2, imbalance=1.0,
                             sizes=(60, 90), progress=False)
    seen: list[object] = []

    class Spy(RandomResizedCrop):
        def __call__(self, sample, *, generator=None):
            seen.append(sample)
            return super().__call__(sample, generator=generator)

    fused = ImageFolder(root, transform=Spy(32, reduce=False))  # decode="auto": gets the path
    whole = ImageFolder(root, transform=train_transforms(32, reduce=False), decode=True)
    tv = ImageFolder(root, transform=v2.CenterCrop(20))  # not crop-aware: gets a tensor
    for i in range(len(fused)):
        torch.manual_seed(i)
        a = fused[i]
        torch.manual_seed(i)
        b = whole[i]
        assert seen[-1] == a["path"]
        assert a["image"].shape == (3, 32, 32) and a["label"] == b["label"]
        assert torch.equal(a["image"], b["image"])
        assert tv[i]["image"].shape == (3, 20, 20)
    raw = ImageFolder(root, decode=False)
    assert isinstance(raw[0]["image"], bytes)
    assert os.path.exists(fused[0]["path"])


def test_map_with_seed_same_for_0_and_2_workers(tmp_path):
    from dataforge import ImageFolder, build_loader
    from dataforge.synthetic import make_image_folder

    root = make_image_folder(tmp_path, num_images=12, num_classes=3, imbalance=1.0,
                             sizes=(60, 90), progress=False)
    ds = ImageFolder(root, decode=False).map(train_transforms(24), seed=7)

    def run(workers: int) -> list[torch.Tensor]:
        loader = build_loader(ds, 4, num_workers=workers, seed=0)
        return [b["image"] for b in loader]

    a, b = run(0), run(2)
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_with_decode():
    from dataforge.transforms.compose import Compose
    from dataforge.transforms.image import Decode, Torchvision, with_decode

    data = C.pil_jpeg(C.photo(40, 50))
    preset = train_transforms(16)
    assert with_decode(preset) is preset
    assert isinstance(with_decode(None), Decode)
    assert with_decode(None)(data).shape == (3, 40, 50)
    wrapped = with_decode(Torchvision(v2.CenterCrop(10)), mode="L")
    assert isinstance(wrapped, Compose) and not wrapped.accepts_encoded
    assert wrapped({"image": data, "label": 1})["image"].shape == (1, 10, 10)
    assert Compose([preset, Torchvision(v2.CenterCrop(8))]).accepts_encoded


def test_eval_preset_matches_torchvision_and_decodes_large_jpegs_reduced(tmp_path):
    from dataforge.transforms.image import ResizeCenterCrop, eval_transforms

    ref = v2.Compose([v2.Resize(36, antialias=True), v2.CenterCrop(32)])
    img = torch.from_numpy(C.photo(70, 95)).permute(2, 0, 1).contiguous()
    assert torch.equal(eval_transforms(32, resize=36)(img), ref(img))
    data = C.pil_jpeg(C.photo(70, 95))
    path = tmp_path / "v.jpg"
    path.write_bytes(data)
    expected = ref(decode_image(data))
    for src in (data, path, {"image": data, "path": str(path)}):
        out = eval_transforms(32, resize=36)(src)
        assert torch.equal(out["image"] if isinstance(out, dict) else out, expected)
    big = C.pil_jpeg(C.photo(600, 800, seed=7))
    ref_big = v2.Compose([v2.Resize(64, antialias=True), v2.CenterCrop(56)])(decode_image(big))
    exact = ResizeCenterCrop(56, 64, reduce=False)(big)
    reduced = eval_transforms(56, resize=64)(big)  # decoded at 1/8: 75 x 100
    assert torch.equal(exact, ref_big)
    assert reduced.shape == ref_big.shape == (3, 56, 56)
    assert (reduced.float() - exact.float()).abs().mean() < 4
    with pytest.raises(ValueError, match="resize=20 is smaller than size=32"):
        eval_transforms(32, resize=20)


@needs_ext
def test_the_train_preset_on_a_file_gives_channels_last_samples_that_batch_without_a_transpose():
    from dataforge.collate.functional import stack

    data = C.pil_jpeg(C.photo(300, 400, seed=5))
    t = RandomResizedCrop(64)
    torch.manual_seed(0)
    samples = [t(data) for _ in range(4)]
    assert all(dense_hwc(s) for s in samples)
    batch = stack(samples)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, torch.stack(samples))


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "gray", "same_size", "upscale"])
def test_direct_resize_equals_torchvision_resize(layout, antialias):
    # NOTE [direct resize] in transforms/resize.py: the same interpolate call as v2's resize_image
    from torchvision.transforms.v2 import functional as F

    from dataforge.transforms.resize import resize_crop

    g = torch.Generator().manual_seed(3)
    h, w, c, size = 157, 203, 3, (64, 48)
    hwc = torch.randint(0, 256, (h, w, c), dtype=torch.uint8, generator=g)
    nhwc = hwc[None]  # a batch of one, as Decode.region(..., batch=True) gives
    crop = {"channels_last": nhwc.permute(0, 3, 1, 2), "contiguous": nhwc.permute(0, 3, 1, 2).contiguous(),
            "gray": nhwc[..., :1].permute(0, 3, 1, 2), "same_size": nhwc.permute(0, 3, 1, 2),
            "upscale": nhwc[:, :20, :30].permute(0, 3, 1, 2)}[layout]
    if layout == "same_size":
        size = (h, w)
    ref = F.resize(crop[0], list(size), antialias=antialias)
    out = resize_crop(crop, size, antialias)
    assert out.shape == ref.shape and torch.equal(out, ref)
    # the layout too (channels-last in, channels-last out); a dim of size 1 has no layout
    assert [st for st, n in zip(out.stride(), out.shape) if n > 1] == \
        [st for st, n in zip(ref.stride(), ref.shape) if n > 1]


@pytest.mark.parametrize("antialias", [True, False])
def test_the_direct_resize_falls_back_to_interpolate_where_torch_lacks_the_aten_call(antialias):
    import types

    from dataforge.transforms import resize

    x = torch.randint(0, 256, (1, 3, 57, 83), dtype=torch.uint8)
    direct = resize.aten_resize(antialias)(x, [32, 40], False, None)
    fallback = resize.aten_resize(antialias, namespace=types.SimpleNamespace())
    assert fallback is not resize.aten_resize(antialias)
    assert torch.equal(fallback(x, [32, 40], False, None), direct)
