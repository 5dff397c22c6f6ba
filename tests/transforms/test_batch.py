from __future__ import annotations

import pytest
import torch
from torch import nn

from dataforge.transforms.batch import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ChannelsLast,
    Compose,
    Normalize,
    RandomBrightnessContrast,
    RandomHorizontalFlip,
    ToFloat,
)


def _batch(n: int = 8, h: int = 6, w: int = 7, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8).to(device)


def pipeline(seed: int = 0) -> Compose:
    return Compose(
        [
            ToFloat(),
            RandomHorizontalFlip(seed=seed),
            RandomBrightnessContrast(p=1.0, seed=seed),
            Normalize(),
            ChannelsLast(),
        ]
    )


def test_pipeline_output_and_modules():
    x = _batch()
    y = pipeline()(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(pipeline(), nn.Module) and len(pipeline()) == 5


def test_to_float_dtypes_and_scale():
    x = _batch()
    assert ToFloat()(x).max() <= 1.0
    assert ToFloat(scale=False)(x).max() > 1.0
    assert ToFloat(dtype=torch.bfloat16)(x).dtype == torch.bfloat16
    assert ToFloat(dtype=torch.float16)(x).dtype == torch.float16


def test_normalize_defaults_are_imagenet():
    x = ToFloat()(_batch())
    y = Normalize()(x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(y, (x - mean) / std)
    assert Normalize()(ToFloat(dtype=torch.bfloat16)(_batch())).dtype == torch.bfloat16


def test_per_sample_randomness_differs_and_reproduces():
    x = ToFloat()(_batch(n=64))
    t = RandomBrightnessContrast(brightness=0.4, contrast=0.4, p=1.0)
    b, c = t.factors(64, torch.Generator().manual_seed(1))
    assert len(set(b.tolist())) == 64 and len(set(c.tolist())) == 64
    assert ((b >= 0.6) & (b <= 1.4)).all() and ((c >= 0.6) & (c <= 1.4)).all()
    y1 = t(x, generator=torch.Generator().manual_seed(1))
    y2 = t(x, generator=torch.Generator().manual_seed(1))
    y3 = t(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    # constructor seeds reproduce too
    assert torch.equal(pipeline(seed=3)(_batch()), pipeline(seed=3)(_batch()))
    assert not torch.equal(pipeline(seed=3)(_batch()), pipeline(seed=4)(_batch()))


def test_flip_is_per_sample():
    x = torch.arange(4.0).reshape(1, 1, 1, 4).expand(256, 3, 2, 4).contiguous()
    y = RandomHorizontalFlip(p=0.5, seed=0)(x)
    flipped = (y[:, 0, 0, 0] == 3.0)
    assert 90 < int(flipped.sum()) < 166
    assert torch.equal(y[flipped], x[flipped].flip(-1))
    assert torch.equal(y[~flipped], x[~flipped])
    u8 = _batch()
    assert RandomHorizontalFlip(p=1.0)(u8).dtype == torch.uint8


def test_probability_p_leaves_some_samples_unchanged():
    x = ToFloat()(_batch(n=200))
    t = RandomBrightnessContrast(p=0.25, seed=0)
    b, c = t.factors(200, torch.Generator().manual_seed(0))
    untouched = (b == 1.0) & (c == 1.0)
    assert 30 < int(untouched.sum()) < 170
    y = t(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[untouched], x[untouched])


def test_gradients_flow():
    x = ToFloat()(_batch()).requires_grad_(True)
    t = Compose([RandomHorizontalFlip(), RandomBrightnessContrast(p=1.0), Normalize()])
    t(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("transform", "x", "exc", "words"),
    [
        (ToFloat(), torch.zeros(2, 3, 4, 4), TypeError, "expects a uint8 batch, got torch.float32"),
        (Normalize(), torch.zeros(2, 3, 4, 4, dtype=torch.uint8), TypeError, "put ToFloat"),
        (RandomBrightnessContrast(), torch.zeros(1, 3, 2, 2, dtype=torch.uint8), TypeError, "torch.uint8"),
        (ToFloat(), torch.zeros(3, 4, 4, dtype=torch.uint8), ValueError, r"shape \(3, 4, 4\)"),
        (ChannelsLast(), torch.zeros(4, 4), ValueError, r"shape \(4, 4\)"),
        (Normalize(), torch.zeros(2, 1, 4, 4), ValueError, "1 channels"),
        (ToFloat(), [1, 2], TypeError, "torch.Tensor"),
    ],
)
def test_bad_batches(transform, x, exc, words):
    with pytest.raises(exc, match=words):
        transform(x)


@pytest.mark.parametrize(
    ("make", "exc", "words"),
    [
        (lambda: ToFloat(dtype=torch.int32), TypeError, "dtype"),
        (lambda: Normalize(mean=(0.5,), std=(0.1, 0.2)), ValueError, "one value per channel"),
        (lambda: Normalize(mean=(0.5,), std=(0.0,)), ValueError, "zeros"),
        (lambda: RandomHorizontalFlip(p=2), ValueError, "p must be"),
        (lambda: RandomBrightnessContrast(brightness=-1), ValueError, "brightness"),
        (lambda: RandomBrightnessContrast(contrast=(2, 1)), ValueError, "contrast"),
        (lambda: RandomHorizontalFlip(generator=3), TypeError, "generator"),
        (lambda: Compose(ToFloat()), TypeError, "list"),
    ],
)
def test_bad_arguments(make, exc, words):
    with pytest.raises(exc, match=words):
        make()


@pytest.mark.gpu
def test_cuda_matches_cpu_with_cpu_generator():
    x = _batch(n=16, h=32, w=32)
    y_cpu = pipeline(seed=7)(x)
    y_gpu = pipeline(seed=7)(x.cuda())
    assert y_gpu.device.type == "cuda"
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_cuda_generator_and_half_precision():
    x = _batch(n=16, h=32, w=32, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    t = Compose([ToFloat(dtype=torch.float16), RandomHorizontalFlip(), RandomBrightnessContrast(), Normalize()])
    y = t(x, generator=g)
    assert y.device.type == "cuda" and y.dtype == torch.float16
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("scale", [True, False])
def test_fused_to_float_normalize_equals_unfused(scale):
    x = _batch()
    fused = Compose([ToFloat(scale=scale), Normalize()])
    unfused = Normalize()(ToFloat(scale=scale)(x))
    torch.testing.assert_close(fused(x), unfused, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="uint8"):
        fused(x.float())
    with pytest.raises(ValueError, match="1 channels"):
        fused(x[:, :1])
    half = Compose([ToFloat(dtype=torch.bfloat16), Normalize()])(x)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), unfused if scale else half.float(), atol=0.05, rtol=0.02)
