"""The padding math in dataforge.collate.functional, including shared-memory output."""

from __future__ import annotations

import pytest
import torch

from dataforge.collate import functional as F


@pytest.mark.parametrize("shared", [False, True])
def test_empty_and_stack(shared: bool) -> None:
    t = F.empty((2, 3), torch.float16, shared=shared)
    assert t.shape == (2, 3) and t.dtype == torch.float16 and t.is_contiguous()
    assert t.is_shared() == shared
    s = F.stack([torch.ones(2), torch.zeros(2, dtype=torch.int32)], shared=shared)
    assert s.tolist() == [[1, 1], [0, 0]] and s.dtype == torch.float32
    assert s.is_shared() == shared


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_lists_and_tensors_agree(shared: bool, side: str) -> None:
    seqs = [[1, 2, 3], [], [4, 5]]
    a = F.pad_lists(seqs, 9, padding_side=side, pad_to_multiple_of=4, shared=shared)
    b = F.pad_tensors([torch.tensor(s, dtype=torch.int64) for s in seqs], 9, padding_side=side,
                      pad_to_multiple_of=4, shared=shared)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
        assert x.is_shared() == y.is_shared() == shared
    assert a[0].shape == (3, 4) and a[2].tolist() == [3, 0, 2]


def test_nothing_to_pad_fast_path() -> None:
    values, mask, lengths = F.pad_lists([[1, 2], [3, 4]])
    assert values.tolist() == [[1, 2], [3, 4]] and bool(mask.all())
    values, mask, _ = F.pad_tensors([torch.ones(2), torch.ones(2)])
    assert bool(mask.all()) and values.shape == (2, 2)


def test_overflowing_int() -> None:
    with pytest.raises(ValueError, match="int64"):
        F.pad_lists([[2**70]])


def test_pad_tensors_errors() -> None:
    with pytest.raises(ValueError, match="0 samples"):
        F.pad_tensors([])
    with pytest.raises(ValueError, match="sample 1 is a scalar"):
        F.pad_tensors([torch.ones(1), torch.tensor(1.0)])


def test_shared_allocation_falls_back_without_private_api(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: object, **kwargs: object) -> None:
        raise AttributeError("_new_shared")

    monkeypatch.setattr(torch.UntypedStorage, "_new_shared", missing, raising=False)
    t = F.empty((3, 2), torch.int64, shared=True)
    assert t.shape == (3, 2) and t.is_shared()
    assert F.stack([torch.ones(2), torch.ones(2)], shared=True).is_shared()


@pytest.mark.parametrize("shared", [False, True])
def test_stack_keeps_a_channels_last_layout(shared: bool) -> None:
    # NOTE [stack keeps the layout]: decoded images are (C, H, W) views of HWC memory
    imgs = [torch.randint(0, 255, (5, 7, 3), dtype=torch.uint8).permute(2, 0, 1) for _ in range(4)]
    out = F.stack(imgs, shared=shared)
    assert torch.equal(out, torch.stack(imgs)) and out.dtype == torch.uint8
    assert out.shape == (4, 3, 5, 7) and out.is_contiguous(memory_format=torch.channels_last)
    assert out.is_shared() == shared
    assert out.reshape(4, -1).shape == (4, 105)
    # a (C, H, W) image whose size-1 dims carry any stride is still dense
    one = [torch.zeros(1, 4, 3).permute(2, 0, 1)] * 2
    assert torch.equal(F.stack(one), torch.stack(one))


def test_stack_falls_back_to_a_contiguous_batch_for_mixed_or_overlapping_layouts() -> None:
    cl = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3).permute(2, 0, 1)
    mixed = [cl, cl.contiguous()]
    out = F.stack(mixed)
    assert torch.equal(out, torch.stack(mixed)) and out.is_contiguous()
    expanded = [torch.ones(3, 1, 1).expand(3, 2, 4)] * 2  # stride 0: not dense
    out = F.stack(expanded)
    assert torch.equal(out, torch.stack(expanded)) and out.is_contiguous()
    sliced = [torch.zeros(3, 4, 6)[:, :, ::2]] * 2  # strided, not dense
    assert F.stack(sliced).is_contiguous()
    with pytest.raises(RuntimeError):
        F.stack([cl, torch.zeros(3, 2, 5)])  # ragged shapes: torch's own error


def test_empty_takes_strides_for_a_dense_layout() -> None:
    t = F.empty((2, 3, 4, 5), torch.float32, strides=(60, 1, 15, 3), shared=True)
    assert t.is_contiguous(memory_format=torch.channels_last) and t.is_shared()
