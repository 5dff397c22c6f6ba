from __future__ import annotations

import io
import warnings

import pytest
import torch
from PIL import Image

from dataforge._rng import make_generator, sample_seed
from dataforge.transforms.batch import IMAGENET_MEAN, IMAGENET_STD, Compose, Normalize, ToFloat
from dataforge.transforms.decode import ImageDecodeError
from dataforge.transforms.gpu_decode import GpuDecodeFallbackWarning, GpuRandomResizedCrop
from dataforge.transforms.presets import RandomResizedCrop

CUDA = torch.cuda.is_available()


def _jpeg(w: int, h: int, seed: int, fmt: str = "JPEG") -> bytes:
    """A JPEG with structure in it (a gradient plus noise), so crops and flips show."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 255, w).expand(h, w)
    y = torch.linspace(0, 255, h)[:, None].expand(h, w)
    noise = torch.randint(0, 40, (h, w, 3), generator=g)
    rgb = torch.stack([x, y, 255 - x], dim=-1) * 0.8 + noise
    buf = io.BytesIO()
    Image.fromarray(rgb.clamp(0, 255).to(torch.uint8).numpy()).save(buf, fmt, quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def files() -> list[bytes]:
    sizes = [(80, 60), (64, 96), (120, 90), (50, 50), (200, 40), (33, 77)]
    return [_jpeg(w, h, i) for i, (w, h) in enumerate(sizes)]


def _cpu_reference(files, size, seed, *, reduce=True, hflip=0.5):
    """The CPU preset on each sample, one generator drawn sample after sample."""
    preset = RandomResizedCrop(size, reduce=reduce, hflip=hflip)
    g = torch.Generator().manual_seed(seed)
    return torch.stack([preset(f, generator=g) for f in files])


def _fallback(size=32, **kw) -> GpuRandomResizedCrop:
    """A transform on the CPU path whatever the machine: CUDA absent, or decode='cpu'."""
    return GpuRandomResizedCrop(size, decode="cpu", device="cpu", **kw)


# ----------------------------------------------------------------------- draws


def test_draws_are_the_cpu_presets_for_the_same_generator(files):
    t = GpuRandomResizedCrop(32, device="cuda")  # draws never touch the device
    sizes = [(60, 80), (96, 64), (90, 120), (50, 50), (40, 200), (77, 33)] * 3
    got = t.draw(sizes, generator=torch.Generator().manual_seed(7))
    preset = RandomResizedCrop(32)
    g = torch.Generator().manual_seed(7)
    want = [preset.draw(h, w, g) for h, w in sizes]  # one preset call per sample, in turn
    assert got == want
    assert len({d[:4] for d in got}) > 10 and {d[4] for d in got} == {True, False}
    for (top, left, h, w, _), (H, W) in zip(got, sizes):
        assert top >= 0 and top + h <= H and left >= 0 and left + w <= W


def test_draws_per_sample_generators_match_a_seeded_map():
    """generators= reproduces MapDataset.map(preset, seed=s): one stream per sample index."""
    t = GpuRandomResizedCrop(32, device="cuda")
    sizes = [(60, 80)] * 5
    gens = [make_generator(sample_seed(3, 0, i)) for i in range(5)]
    got = t.draw(sizes, generators=gens)
    preset = RandomResizedCrop(32)
    for i, d in enumerate(got):
        g = make_generator(sample_seed(3, 0, i))
        assert d == preset.draw(60, 80, g)


def test_own_generator_from_seed_and_no_flip_draw_when_hflip_is_zero():
    sizes = [(60, 80)] * 6
    a = GpuRandomResizedCrop(32, device="cuda", seed=5).draw(sizes)
    b = GpuRandomResizedCrop(32, device="cuda", seed=5).draw(sizes)
    assert a == b
    no_flip = GpuRandomResizedCrop(32, device="cuda", hflip=0.0, seed=5).draw(sizes)
    preset, g = RandomResizedCrop(32, hflip=0.0), torch.Generator().manual_seed(5)
    want = [preset.draw(60, 80, g) for _ in sizes]
    assert no_flip == want and not any(d[4] for d in want)


# ----------------------------------------------------------------------- the CPU path


def test_cpu_path_pixels_equal_the_cpu_preset_then_normalize(files):
    t = _fallback(32, seed=11)
    out = t(files)
    assert out.shape == (len(files), 3, 32, 32) and out.dtype == torch.float32
    assert out.device.type == "cpu"
    ref = _cpu_reference(files, 32, 11)
    want = Compose([ToFloat(), Normalize(IMAGENET_MEAN, IMAGENET_STD)])(ref)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)
    raw = _fallback(32, seed=11, normalize=False)(files)
    assert raw.dtype == torch.uint8 and torch.equal(raw, ref)


def test_cpu_path_takes_a_batch_dict_and_names_the_file_in_errors(files):
    t = _fallback((24, 40), normalize=False)
    batch = {"image": list(files[:3]), "label": torch.tensor([0, 1, 2]), "path": ["a", "b", "c"]}
    out = t(batch, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"image", "label", "path"} and out["image"].shape == (3, 3, 24, 40)
    assert torch.equal(out["label"], batch["label"]) and batch["image"] == list(files[:3])
    bad = {"image": [files[0], files[1][:40]], "path": ["good.jpg", "cut.jpg"]}
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        t(bad)


@pytest.mark.skipif(CUDA, reason="the CUDA-absent fallback needs a machine without CUDA")
def test_without_cuda_it_warns_once_and_falls_back_to_the_cpu_preset(files):
    t = GpuRandomResizedCrop(32, seed=2)  # decode="cuda", device="cuda"
    with pytest.warns(GpuDecodeFallbackWarning, match="CUDA is not available.*decoding on the CPU"):
        out = t(files)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second batch: no second message
        again = t(files)
    assert out.shape == again.shape == (len(files), 3, 32, 32) and out.dtype == torch.float32
    assert out.device.type == "cpu" and t.output_device.type == "cpu"
    assert "CUDA is not available" in (t.fallback_reason or "")
    ref = Compose([ToFloat(), Normalize()])(_cpu_reference(files, 32, 2))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_non_jpeg_files_and_paths_are_accepted(files, tmp_path):
    png = _jpeg(70, 50, 9, fmt="PNG")
    path = tmp_path / "x.jpg"
    path.write_bytes(files[0])
    batch = [png, str(path), files[1]]
    out = _fallback(16, normalize=False, seed=1)(batch)
    assert torch.equal(out, _cpu_reference([png, files[0], files[1]], 16, 1))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"decode": "nvjpeg"}, ValueError, "decode must be one of"),
    ({"decode": "cuda", "device": "cpu"}, ValueError, "decode='cpu'"),
    ({"device": "tpu:x"}, ValueError, "device must be"),
    ({"mean": (0.5,)}, ValueError, "mean and std"),
    ({"std": (0.2, 0.0, 0.2)}, ValueError, "std without zeros"),
    ({"seed": "0"}, TypeError, "seed must be an int"),
    ({"generator": 3}, TypeError, "generator must be a torch.Generator"),
    ({"size": 0}, ValueError, "size must be"),
    ({"hflip": 2}, ValueError, "hflip must be"),
])
def test_bad_arguments_name_the_parameter(kwargs, error, match):
    with pytest.raises(error, match=match):
        GpuRandomResizedCrop(**kwargs)


def test_bad_batches_name_the_problem(files):
    t = _fallback()
    with pytest.raises(TypeError, match="list of encoded images"):
        t(files[0])
    with pytest.raises(TypeError, match="sample 1 of the batch is a Tensor"):
        t([files[0], torch.zeros(3, 4, 4)])
    with pytest.raises(ValueError, match="empty batch"):
        t([])
    with pytest.raises(KeyError, match="'pixels'"):
        _fallback(key="pixels")({"image": files})
    with pytest.raises(ValueError, match="one generator per sample"):
        t(files[:2], generators=[torch.Generator()])
    with pytest.raises(ValueError, match="not both"):
        t(files[:1], generator=torch.Generator(), generators=[torch.Generator()])


def test_device_path_arithmetic_on_the_cpu(files, monkeypatch):
    """The GPU path's crop, float resize, flip and normalize, run with torchvision's CPU
    decoder: against the CPU preset at full scale only the uint8 resize's rounding differs."""
    t = GpuRandomResizedCrop(32, seed=6, normalize=False)
    monkeypatch.setattr(t, "_resolve", lambda: (torch.device("cpu"), None))
    png = _jpeg(70, 50, 9, fmt="PNG")  # decoded apart, on the CPU decoder
    batch = [*files, png]
    out = t(batch)
    ref = _cpu_reference(batch, 32, 6, reduce=False)
    assert out.dtype == torch.uint8 and out.shape == ref.shape
    assert (out.int() - ref.int()).abs().max() <= 1
    t_norm = GpuRandomResizedCrop(32, seed=6)
    monkeypatch.setattr(t_norm, "_resolve", lambda: (torch.device("cpu"), None))
    want = Compose([ToFloat(), Normalize()])(ref)
    torch.testing.assert_close(t_norm(batch), want, rtol=0, atol=1.01 / 255 / min(IMAGENET_STD))


# ----------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
def test_gpu_decodes_on_the_device_with_the_cpu_draws(files):
    t = GpuRandomResizedCrop(32, seed=4, normalize=False)
    assert t.fallback_reason is None, t.fallback_reason
    out = t(files)
    assert out.device.type == "cuda" and out.dtype == torch.uint8 and out.shape == (len(files), 3, 32, 32)
    # reduce=False: the CPU preset decodes at full scale too; the rest is nvJPEG against
    # libjpeg-turbo and a float resize against a uint8 one
    # (on these files, other draws differ by 13-45 levels per sample and a flip by 20-70;
    # re-upsampling the chroma another way, a decoder difference, by 1.5-2.4 at full size)
    ref = _cpu_reference(files, 32, 4, reduce=False)
    diff = (out.cpu().float() - ref.float()).abs()
    assert diff.mean() < 4.0, f"mean abs difference {diff.mean():.2f} levels"
    per_sample = diff.mean(dim=(1, 2, 3))
    assert (per_sample < 8.0).all(), per_sample.tolist()


@pytest.mark.gpu
def test_gpu_normalized_batch_matches_the_cpu_pipeline(files):
    t = GpuRandomResizedCrop(48, seed=8)
    out = t({"image": files, "path": [f"f{i}.jpg" for i in range(len(files))]})["image"]
    assert out.device.type == "cuda" and out.dtype == torch.float32
    ref = Compose([ToFloat(), Normalize()])(_cpu_reference(files, 48, 8, reduce=False))
    err = (out.cpu() - ref).abs().mean().item()
    assert err < 4.0 / 255 / min(IMAGENET_STD), err


@pytest.mark.gpu
def test_gpu_falls_back_per_sample_for_png_and_names_corrupt_files(files):
    png = _jpeg(70, 50, 9, fmt="PNG")
    t = GpuRandomResizedCrop(16, seed=1, normalize=False)
    out = t([png, files[0]])
    ref = _cpu_reference([png, files[0]], 16, 1, reduce=False)
    assert (out.cpu().float() - ref.float()).abs().mean() < 4.0
    broken = files[1][:200] + b"\x00" * 50 + files[1][-2:]  # EOI kept: passes the header check
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        t({"image": [files[0], broken], "path": ["ok.jpg", "bad.jpg"]})
