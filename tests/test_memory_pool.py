"""NOTE [buffer pool] in dataforge._memory: a buffer comes back only when nothing can reach it."""

from __future__ import annotations

import gc
import threading

import pytest
import torch

from dataforge import _memory
from dataforge._memory import BufferPool, empty_like_cpu, empty_strided_cpu
from dataforge.collate.functional import stack

SHAPE, STRIDES = (4, 3, 128, 256), (3 * 128 * 256, 1, 256 * 3, 3)  # channels-last, 1.5 MiB of float


def _free_count(pool: BufferPool) -> int:
    return sum(len(v) for v in pool._free.values())


def test_released_only_when_every_view_numpy_array_and_capsule_is_gone():
    pool = BufferPool()
    t = pool.empty_strided(SHAPE, STRIDES, torch.float32)
    assert t.shape == SHAPE and t.stride() == STRIDES and t.dtype == torch.float32
    ptr = t.data_ptr()
    view = t[1:, :, 5:]
    array = t.numpy()
    capsule = torch.utils.dlpack.to_dlpack(t)
    del t
    gc.collect()
    assert _free_count(pool) == 0  # three holders left
    del view, array
    gc.collect()
    assert _free_count(pool) == 0  # the DLPack capsule still holds the storage
    del capsule
    gc.collect()
    assert _free_count(pool) == 1
    again = pool.empty_strided(SHAPE, STRIDES, torch.float32)
    assert again.data_ptr() == ptr and pool.reused == 1 and _free_count(pool) == 0


def test_live_buffers_never_share_memory_and_values_survive():
    pool = BufferPool()
    a = pool.empty_strided(SHAPE, STRIDES, torch.float32).fill_(1.0)
    b = pool.empty_strided(SHAPE, STRIDES, torch.float32).fill_(2.0)
    assert a.data_ptr() != b.data_ptr()
    del b
    c = pool.empty_strided(SHAPE, STRIDES, torch.float32).fill_(3.0)  # b's buffer
    assert bool((a == 1.0).all()) and bool((c == 3.0).all())


def test_dtypes_sizes_alignment_and_cap():
    pool = BufferPool(max_free_bytes=3 << 20)
    u8 = pool.empty_strided((1 << 21,), (1,), torch.uint8)
    f16 = pool.empty_strided((3, 1 << 19), (1 << 19, 1), torch.float16)
    assert u8.data_ptr() % 64 == 0 and f16.data_ptr() % 64 == 0
    del u8, f16
    gc.collect()
    assert pool.free_bytes <= 3 << 20 and _free_count(pool) == 1  # the second did not fit
    pool.clear()
    assert pool.free_bytes == 0 and _free_count(pool) == 0


def test_threads_get_distinct_buffers():
    pool = BufferPool()
    seen: list[set[int]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                held = [pool.empty_strided(SHAPE, STRIDES, torch.float32) for _ in range(3)]
                ptrs = {t.data_ptr() for t in held}
                assert len(ptrs) == 3
                for i, t in enumerate(held):
                    t.fill_(float(i))
                for i, t in enumerate(held):
                    assert float(t[0, 0, 0, 0]) == float(i)  # nobody else wrote into it
                seen.append(ptrs)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(seen) == 200 and pool.reused > 0


def test_small_and_odd_layouts_bypass_the_pool(monkeypatch):
    pool = BufferPool()
    monkeypatch.setattr(_memory, "POOL", pool)
    small = empty_strided_cpu((8, 8), (8, 1), torch.float32)
    assert small.shape == (8, 8) and pool.allocated == 0
    x = torch.zeros(SHAPE, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    out = empty_like_cpu(x, torch.float32)
    assert out.stride() == x.stride() and pool.allocated == 1
    overlapping = torch.zeros(1, 3, 512, 512, dtype=torch.uint8).expand(4, 3, 512, 512)
    assert empty_like_cpu(overlapping, torch.float32).is_contiguous() and pool.allocated == 1


@pytest.mark.parametrize("channels_last", [True, False])
def test_stack_from_the_pool_equals_torch_stack(monkeypatch, channels_last):
    pool = BufferPool()
    monkeypatch.setattr(_memory, "POOL", pool)
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 224, 224), generator=g, dtype=torch.uint8) for _ in range(8)]
    if channels_last:
        images = [im.permute(1, 2, 0).contiguous().permute(2, 0, 1) for im in images]
    batch = stack(images)
    assert torch.equal(batch, torch.stack(images)) and pool.allocated == 1  # 1.2 MB: pooled
    assert batch.is_contiguous(memory_format=torch.channels_last) == channels_last
    grad = [torch.zeros(3, 224, 224, requires_grad=True) for _ in range(8)]
    assert stack(grad).requires_grad  # autograd: plain torch.stack, not out=


def test_set_buffer_pool_bounds_and_turns_off(monkeypatch):
    import dataforge

    pool = BufferPool()
    monkeypatch.setattr(_memory, "POOL", pool)
    t = empty_strided_cpu(SHAPE, STRIDES, torch.float32)
    del t
    gc.collect()
    assert pool.free_bytes > 0
    dataforge.set_buffer_pool(0)  # hands the free buffers back, keeps none from now on
    assert pool.free_bytes == 0 and pool.max_free_bytes == 0
    made = pool.allocated
    t = empty_strided_cpu(SHAPE, STRIDES, torch.float32)
    assert t.stride() == STRIDES and pool.allocated == made  # a plain torch allocation
    del t
    gc.collect()
    assert pool.free_bytes == 0
    for bad in (-1, 1.5, True, "1GB"):
        with pytest.raises(ValueError, match="max_free_bytes must be an int >= 0"):
            dataforge.set_buffer_pool(bad)
