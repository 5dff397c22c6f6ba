"""Batch math agrees with per-sample torchvision.transforms.v2.functional for fixed parameters."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from dataforge.transforms import functional as F


def _batch(n: int = 4, c: int = 3, h: int = 9, w: int = 11, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def test_to_float_matches_to_dtype():
    x = _batch()
    torch.testing.assert_close(F.to_float(x), TF.to_dtype(x, torch.float32, scale=True))
    assert torch.equal(F.to_float(x, scale=False), x.float())
    assert F.to_float(x, torch.bfloat16).dtype == torch.bfloat16


def test_normalize_matches_torchvision():
    x = F.to_float(_batch())
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = torch.stack([TF.normalize(s, mean, std) for s in x])
    torch.testing.assert_close(F.normalize(x, mean, std), ref)


def test_hflip_mask_matches_per_sample():
    x = _batch()
    mask = torch.tensor([True, False, True, False])
    ref = torch.stack([TF.horizontal_flip(s) if m else s for s, m in zip(x, mask)])
    assert torch.equal(F.hflip(x, mask), ref)
    assert torch.equal(F.hflip(x), TF.horizontal_flip(x))


@pytest.mark.parametrize("channels", [3, 1])
def test_brightness_contrast_match_torchvision(channels):
    x = F.to_float(_batch(c=channels))
    b = torch.tensor([0.5, 1.0, 1.3, 2.0])
    c = torch.tensor([0.0, 0.7, 1.0, 1.8])
    ref_b = torch.stack([TF.adjust_brightness(s, float(f)) for s, f in zip(x, b)])
    ref_c = torch.stack([TF.adjust_contrast(s, float(f)) for s, f in zip(x, c)])
    torch.testing.assert_close(F.adjust_brightness(x, b), ref_b)
    torch.testing.assert_close(F.adjust_contrast(x, c), ref_c, atol=1e-6, rtol=1e-5)
    gray = F.rgb_to_grayscale(x)
    torch.testing.assert_close(gray, torch.stack([TF.rgb_to_grayscale(s) for s in x]))


def test_brightness_contrast_are_differentiable():
    x = F.to_float(_batch()).requires_grad_(True)
    y = F.adjust_contrast(F.adjust_brightness(x, torch.full((4,), 0.9)), torch.full((4,), 1.1))
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    z = F.hflip(x, torch.tensor([True, False, True, False]))
    assert z.requires_grad


def test_fused_to_float_normalize_matches_torchvision():
    x = _batch()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = torch.stack([TF.normalize(TF.to_dtype(s, torch.float32, scale=True), mean, std) for s in x])
    torch.testing.assert_close(F.to_float_normalize(x, mean, std), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(4, 3, 7, 5), (2, 3, 64, 48), (3, 1, 5, 5), (2, 4, 3, 3)])
def test_per_channel_ops_on_channels_last_batches(shape):
    # NOTE [channels-last per-channel ops]: the fast CPU path for channels-last batches
    # gives the contiguous path's values, keeps the layout, and stays differentiable.
    from dataforge.transforms.functional import normalize, to_float_normalize

    c = shape[1]
    mean, std = [0.1 * (i + 1) for i in range(c)], [0.2 + 0.05 * i for i in range(c)]
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    xl = x.contiguous(memory_format=torch.channels_last)
    a, b = to_float_normalize(x, mean, std), to_float_normalize(xl, mean, std)
    assert torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last)
    f = (x.float() / 255).contiguous(memory_format=torch.channels_last).requires_grad_()
    n = normalize(f, mean, std)
    assert torch.allclose(n, normalize(f.detach().contiguous(), mean, std))
    assert n.is_contiguous(memory_format=torch.channels_last)
    n.sum().backward()
    assert torch.allclose(f.grad[0, :, 0, 0], 1 / torch.tensor(std))


def test_to_float_normalize_runs_in_one_thread_on_the_cpu(monkeypatch):
    """NOTE [normalize in one thread]: one intra-op thread for the pass, the caller's count after."""
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    ref = (x.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor([0.2, 0.3, 0.4]).view(3, 1, 1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    real = F.torch.set_num_threads
    monkeypatch.setattr(F.torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    try:
        out = F.to_float_normalize(x, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4])
        after = torch.get_num_threads()
    finally:
        monkeypatch.undo()
        torch.set_num_threads(before)
    torch.testing.assert_close(out, ref)
    assert seen == [1, 2] and after == 2
