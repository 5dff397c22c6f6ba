"""A batch of crops in one native call (NOTE [one native call per batch] in
``dataforge/_crops.cpp``): ``RandomResizedCrop.call_batch``, ``decode_regions``,
``_jpeg.decode_crops``, ``_crops.resize_into`` and ``ImageFolder.__getitems__`` give what
the single calls give, draws, pixels and errors."""

from __future__ import annotations

import io

import pytest
import torch
from fuzz import jpeg_corpus as C
from helpers import dense_hwc
from PIL import Image

import dataforge.transforms.decode as dec
from dataforge.transforms import presets, resize
from dataforge.transforms.decode import ImageDecodeError, decode_regions, read_header
from dataforge.transforms.image import RandomResizedCrop, train_transforms

needs_ext = pytest.mark.skipif(not dec.HAVE_ROI_DECODE, reason="dataforge._jpeg not built")
needs_batch = pytest.mark.skipif(not resize.HAVE_BATCH_RESIZE, reason="dataforge._crops not built")


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def files():
    """JPEGs of every sampling the decoder takes (one progressive, one small enough that
    some crops need no reduction), and a PNG (decoded whole)."""
    out = [C.pil_jpeg(C.photo(h, w, seed=i), **C.PIL_VARIANTS[v])
           for i, (h, w, v) in enumerate([(150, 210, "420"), (480, 640, "444"), (300, 200, "progressive"),
                                          (64, 64, "420"), (700, 500, "420")])]
    return [*out, _png(C.photo(90, 120, seed=9))]


@pytest.mark.parametrize("kw", [
    {},
    {"size": 64, "antialias": False},
    {"size": (40, 96), "reduce": False},
    {"size": 32, "hflip": 0.0},
    {"size": 48, "hflip": 1.0, "scale": (0.9, 1.0)},
])
def test_call_batch_equals_the_single_calls(files, tmp_path, kw):
    t = RandomResizedCrop(**kw)
    paths = []
    for i, data in enumerate(files):
        paths.append(tmp_path / f"{i}.img")
        paths[-1].write_bytes(data)
    sources = [*files, *paths, str(paths[0])]
    for seed in range(3):
        batch = t.call_batch(sources, generator=torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        single = [t(s, generator=g) for s in sources]
        assert len(batch) == len(single)
        for k, (a, b) in enumerate(zip(batch, single)):
            assert a.shape == b.shape == (3, *t.size) and torch.equal(a, b), (kw, seed, k)
            assert dense_hwc(a)  # rows of one channels-last batch
        torch.manual_seed(seed)  # no generator: torch's global RNG, the same draws in order
        batch = t.call_batch(sources)
        torch.manual_seed(seed)
        assert all(torch.equal(a, t(s)) for a, s in zip(batch, sources))


@needs_ext
def test_call_batch_in_gray_and_without_the_native_resize(files, monkeypatch):
    t = RandomResizedCrop(56, mode="L")
    batch = t.call_batch(files, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    assert all(a.shape == (1, 56, 56) and torch.equal(a, t(s, generator=g)) for a, s in zip(batch, files))
    monkeypatch.setattr(resize, "native_uint8_bilinear", lambda: False)  # v2's float resize
    t = RandomResizedCrop(56)
    batch = t.call_batch(files, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    assert all(torch.equal(a, t(s, generator=g)) for a, s in zip(batch, files))


def test_call_batch_without_the_extension_is_the_single_calls(files, monkeypatch):
    monkeypatch.setattr(resize, "_crops", None)
    t = train_transforms(40)
    batch = t.call_batch(files, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    assert all(torch.equal(a, t(s, generator=g)) for a, s in zip(batch, files))
    image = torch.zeros(3, 50, 60, dtype=torch.uint8)  # not encoded: single calls
    assert [x.shape for x in t.call_batch([image, image])] == [(3, 40, 40)] * 2


def test_the_seeds_of_a_batch_are_the_seeds_of_single_calls():
    for gen in (None, torch.Generator().manual_seed(11)):
        torch.manual_seed(3)
        many = [r.random() for r in presets._draw_rngs(gen, 40)]
        torch.manual_seed(3)
        if gen is not None:
            gen.manual_seed(11)
        assert many == [presets._draw_rng(gen).random() for _ in range(40)]


@needs_ext
def test_a_bad_file_in_a_batch_raises_its_error_naming_it(files, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(C.corrupt_complete_jpeg())  # 96 x 128, damaged from a third of its data
    t = RandomResizedCrop(32, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))  # the whole image
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        t(bad)
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        t.call_batch([files[1], bad, files[2]])
    notjpeg = tmp_path / "notjpeg.jpg"
    notjpeg.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="notjpeg.jpg"):
        t.call_batch([files[1], notjpeg])


@needs_ext
def test_decode_regions_equals_decode_region(files):
    images = [read_header(f) for f in files]
    boxes = [(3, 5, 40, 50), (100, 200, 300, 400), (0, 0, 300, 200), (10, 10, 20, 30), (1, 2, 698, 497),
             (5, 6, 70, 80)]
    denoms = [1, 2, 4, 1, 8, 2]
    for mode in ("RGB", "L"):
        many = decode_regions(images, boxes, denoms, mode=mode, batch=True)
        for im, box, d, got in zip(images, boxes, denoms, many):
            one = dec.decode_region(im, box, mode=mode, scale_denom=d, batch=True)
            assert got.shape == one.shape and torch.equal(got, one), (im.name, box, d)
    with pytest.raises(ValueError, match="does not lie inside"):
        decode_regions(images[:2], [(0, 0, 10, 10), (0, 0, 481, 10)], [1, 1])
    with pytest.raises(ValueError, match="scale_denom"):
        decode_regions(images[:1], [(0, 0, 10, 10)], [3])


@needs_ext
def test_decode_crops_gives_each_job_its_result_or_its_error(files):
    from dataforge import _jpeg

    jobs = [(files[0], 0, 0, 50, 60), (b"not a jpeg", 0, 0, 5, 5), (files[1], 10, 20, 100, 100, 2, True),
            (files[2], 0, 0, 10, 10, 1, False, True, 0, False)]
    got = _jpeg.decode_crops(jobs)
    assert isinstance(got[1], ValueError) and "Not a JPEG" in str(got[1])
    for job, result in zip(jobs[:1] + jobs[2:], got[:1] + got[2:]):
        one = _jpeg.decode_crop(*job)
        assert result[1:] == one[1:] and bytes(result[0]) == bytes(one[0])
    assert _jpeg.decode_crops([]) == []
    with pytest.raises(TypeError, match="job 1 must be a tuple"):
        _jpeg.decode_crops([jobs[0], [files[0], 0, 0, 5, 5]])
    with pytest.raises(ValueError, match="scale_denom"):
        _jpeg.decode_crops([(files[0], 0, 0, 5, 5, 3)])


@needs_batch
def test_resize_into_checks_its_arguments():
    crop = torch.zeros(1, 3, 20, 30, dtype=torch.uint8)
    out = torch.empty(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="same length"):
        resize._crops.resize_into([crop], [False, True], out, True)
    with pytest.raises(ValueError, match="crop 1 must be a uint8"):
        resize._crops.resize_into([crop, crop.float()], [False, True], out, True)
    with pytest.raises(ValueError, match=r"crop 0 must be a uint8 CPU tensor \(1, 3"):
        resize._crops.resize_into([crop[:, :1], crop], [False, True], out, True)
    with pytest.raises(ValueError, match="out must be a uint8"):
        resize._crops.resize_into([crop, crop], [False, True], out.float(), True)


@needs_batch
@pytest.mark.parametrize("antialias", [True, False])
def test_resize_into_is_the_direct_resize_and_flip(antialias):
    g = torch.Generator().manual_seed(0)
    crops = [torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
             for h, w in [(157, 203), (48, 64), (20, 30), (300, 90)]]
    crops.append(crops[0].contiguous())  # not the decoder's layout: restrided as v2 does
    flips = [False, True, True, False, True]
    out = torch.empty(5, 48, 64, 3, dtype=torch.uint8).permute(0, 3, 1, 2)
    resize._crops.resize_into(crops, flips, out, antialias)
    for crop, flip, row in zip(crops, flips, out):
        one = resize.resize_crop(crop, (48, 64), antialias)
        assert torch.equal(row, one.flip(-1) if flip else one)


def test_image_folder_getitems_makes_the_batch_in_one_call(tmp_path):
    from dataforge import ImageFolder, build_loader
    from dataforge.synthetic import make_image_folder

    root = make_image_folder(tmp_path, num_images=12, num_classes=3, imbalance=1.0,
                             sizes=(60, 90), progress=False)
    calls = []

    class Spy(RandomResizedCrop):
        def call_batch(self, sources, *, generator=None):
            calls.append(len(sources))
            return super().call_batch(sources, generator=generator)

    ds = ImageFolder(root, transform=Spy(32))
    idx = [5, 0, 11, 3]
    torch.manual_seed(0)
    many = ds.__getitems__(idx)
    torch.manual_seed(0)
    single = [ds[i] for i in idx]
    assert calls == [4]
    for a, b in zip(many, single):
        assert a["label"] == b["label"] and a["path"] == b["path"] and torch.equal(a["image"], b["image"])
    loader = build_loader(ds, batch_size=4, num_workers=0)
    assert sum(b["image"].shape[0] for b in loader) == 12
    stages = loader.stats()["stages"]
    assert stages["transform"]["count"] == 12  # a batched call counts its samples


def test_a_bad_file_under_the_skip_policy_is_skipped_and_counted(tmp_path):
    from dataforge import ImageFolder, build_loader
    from dataforge.synthetic import make_image_folder

    root = make_image_folder(tmp_path, num_images=8, num_classes=2, imbalance=1.0,
                             sizes=(60, 90), progress=False)
    ds = ImageFolder(root, transform=train_transforms(32))
    with open(ds.paths[3], "wb") as f:
        f.write(b"not an image")
    loader = build_loader(ds, batch_size=4, num_workers=0, on_error="skip")
    sizes = [b["image"].shape[0] for b in loader]
    assert sorted(sizes) == [3, 4]
    assert loader.stats()["num_failures"] == 1


@pytest.mark.parametrize("kw", [{}, {"size": 32, "resize": 40}, {"size": (30, 50), "resize": 64, "reduce": False},
                                {"size": 64, "resize": 64}])
def test_eval_call_batch_equals_the_single_calls(files, kw):
    from dataforge.transforms.image import ResizeCenterCrop

    t = ResizeCenterCrop(**kw)
    sources = [*files, C.pil_jpeg(C.photo(64, 100, seed=3))]  # a shorter side already at 64
    batch = t.call_batch(sources)
    single = [t(s) for s in sources]
    for k, (a, b) in enumerate(zip(batch, single)):
        assert a.shape == b.shape == (3, *t.size) and torch.equal(a, b), (kw, k)


def test_eval_call_batch_without_the_native_resize(files, monkeypatch):
    from dataforge.transforms.image import ResizeCenterCrop

    t = ResizeCenterCrop(32, resize=36)
    monkeypatch.setattr(resize, "native_uint8_bilinear", lambda: False)
    assert all(torch.equal(a, t(s)) for a, s in zip(t.call_batch(files), files))
    monkeypatch.setattr(resize, "_crops", None)
    assert all(torch.equal(a, t(s)) for a, s in zip(t.call_batch(files), files))


@needs_batch
def test_resize_into_windows_keep_the_pixels_at_their_place():
    g = torch.Generator().manual_seed(1)
    crops = [torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=g) for h, w in [(90, 120), (40, 40)]]
    out = torch.empty(2, 3, 20, 30, dtype=torch.uint8)
    resize._crops.resize_into(crops, [False, True], out, True, [(45, 60, 5, 10), (40, 40, 0, 10)])
    assert torch.equal(out[0], resize.resize_crop(crops[0], (45, 60), True)[:, 5:25, 10:40])
    assert torch.equal(out[1], crops[1][0, :, 0:20, 10:40].flip(-1))
    with pytest.raises(ValueError, match="window 1 must hold out's 20 x 30"):
        resize._crops.resize_into(crops, [False, False], out, True, [(45, 60, 5, 10), (40, 40, 25, 0)])
    with pytest.raises(ValueError, match=r"same length.*\(1\)"):
        resize._crops.resize_into(crops, [False, False], out, True, [(45, 60, 5, 10)])


def test_a_subclass_with_its_own_call_gets_its_own_calls(files):
    seen = []

    class Marked(RandomResizedCrop):
        def __call__(self, sample, *, generator=None):
            seen.append(sample)
            return super().__call__(sample, generator=generator) // 2

    t = Marked(32)
    batch = t.call_batch(files[:3], generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    assert seen[:3] == files[:3]
    assert all(torch.equal(a, RandomResizedCrop(32)(s, generator=g) // 2) for a, s in zip(batch, files))


@pytest.mark.parametrize("seed", [None, 7])
def test_a_mapped_preset_takes_the_batch_in_one_call(tmp_path, seed):
    # the README's code: ImageFolder(decode=False) -> split -> map(train_transforms, seed=)
    from dataforge import ImageFolder, build_loader
    from dataforge.synthetic import make_image_folder
    from dataforge.transforms.image import eval_transforms

    root = make_image_folder(tmp_path, num_images=12, num_classes=3, imbalance=1.0,
                             sizes=(60, 90), progress=False)
    calls = []

    class Spy(RandomResizedCrop):
        def call_batch(self, sources, **kw):
            calls.append(len(sources))
            return super().call_batch(sources, **kw)

    raw = ImageFolder(root, decode=False)
    for t in (Spy(32), eval_transforms(32, resize=40)):
        ds = raw.map(t, seed=seed)
        ds.set_epoch(2)
        idx = [5, 0, 11, 3]
        torch.manual_seed(0)
        many = ds.__getitems__(idx)
        torch.manual_seed(0)
        single = [ds[i] for i in idx]
        for a, b in zip(many, single):
            assert a["label"] == b["label"] and a["path"] == b["path"] and torch.equal(a["image"], b["image"])
            assert isinstance(a["image"], torch.Tensor) and a["image"].shape == (3, 32, 32)
    assert calls == [4]
    if seed is not None:  # per (seed, epoch, index): the same batches from threads and in-line
        ds = raw.map(train_transforms(32), seed=seed)
        runs = [[b["image"] for b in build_loader(ds, batch_size=4, num_workers=w, engine="thread", seed=0)]
                for w in (0, 2)]
        assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_call_batch_takes_one_generator_or_one_per_source(files):
    t = train_transforms(32)
    gens = [torch.Generator().manual_seed(i) for i in range(len(files))]
    batch = t.call_batch(files, generators=gens)
    assert all(torch.equal(a, t(s, generator=torch.Generator().manual_seed(i)))
               for i, (a, s) in enumerate(zip(batch, files)))
    with pytest.raises(ValueError, match="not both"):
        t.call_batch(files, generator=gens[0], generators=gens)
    with pytest.raises(ValueError, match="one generator per source: 2 for"):
        t.call_batch(files, generators=gens[:2])


def test_an_iterable_map_hands_the_preset_groups_of_items(files):
    from dataforge import IterDataset
    from dataforge.datasets import batched_map

    calls = []

    class Spy(RandomResizedCrop):
        def call_batch(self, sources, **kw):
            calls.append(len(sources))
            return super().call_batch(sources, **kw)

    n = batched_map.MAP_CHUNK + 5
    items = [{"jpg": files[i % len(files)], "cls": i} for i in range(n)]
    t = Spy(32, key="jpg")
    torch.manual_seed(0)
    many = list(IterDataset.from_iterable(items).map(t))
    torch.manual_seed(0)
    single = [t(x) for x in items]
    assert calls == [batched_map.MAP_CHUNK, 5]
    assert [m["cls"] for m in many] == list(range(n))
    assert all(torch.equal(a["jpg"], b["jpg"]) for a, b in zip(many, single))


def test_an_iterable_map_with_a_bad_item_yields_the_items_before_it_then_raises(files):
    from dataforge import IterDataset

    items = [files[0], files[1], b"not an image", files[2]]
    it = iter(IterDataset.from_iterable(items).map(train_transforms(32)))
    assert [next(it).shape for _ in range(2)] == [(3, 32, 32)] * 2
    with pytest.raises(ImageDecodeError, match="not an image"):
        next(it)
