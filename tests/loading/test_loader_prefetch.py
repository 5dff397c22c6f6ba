from __future__ import annotations

import collections

import pytest
import torch

import dataforge
from dataforge.loading.prefetch import DevicePrefetcher

Pair = collections.namedtuple("Pair", "image label")


def _batches() -> list:
    return [
        {"image": torch.full((2, 3), i, dtype=torch.uint8), "label": torch.tensor([i, i]), "id": f"b{i}"}
        for i in range(3)
    ]


def test_cpu_path_moves_nested_batches_and_keeps_types() -> None:
    data = [Pair(torch.ones(2), [torch.zeros(1), ("x", torch.ones(1))]) for _ in range(2)]
    out = list(DevicePrefetcher(data, "cpu"))
    assert isinstance(out[0], Pair) and isinstance(out[0].label, list)
    assert out[0].label[1][0] == "x" and torch.equal(out[0].image, torch.ones(2))


def test_transforms_on_keys_and_whole_batch() -> None:
    def to_float(x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255

    out = list(DevicePrefetcher(_batches(), "cpu", batch_transforms=to_float, keys="image"))
    assert out[1]["image"].dtype == torch.float32 and out[1]["label"].dtype == torch.int64
    assert out[2]["id"] == "b2"
    tup = [(torch.ones(2), torch.zeros(2))]
    out2 = list(DevicePrefetcher(tup, "cpu", batch_transforms=[lambda x: x * 3, lambda x: x + 1], keys=0))
    assert out2[0][0].tolist() == [4.0, 4.0] and out2[0][1].tolist() == [0.0, 0.0]
    whole = list(DevicePrefetcher([torch.ones(2)], "cpu", batch_transforms=lambda b: b * 2))
    assert whole[0].tolist() == [2.0, 2.0]


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_order_len_and_depth(depth: int) -> None:
    dl = torch.utils.data.DataLoader(torch.arange(10), batch_size=3)
    p = DevicePrefetcher(dl, "cpu", depth=depth)
    assert len(p) == 4
    assert torch.cat(list(p)).tolist() == list(range(10))


def _pulled_after_first(device: str, depth: int) -> list[int]:
    pulled: list[int] = []

    def gen():
        for i in range(5):
            pulled.append(i)
            yield torch.tensor([i])

    it = iter(DevicePrefetcher(gen(), device, depth=depth))
    next(it)
    return pulled


def test_cpu_path_does_not_fetch_ahead() -> None:
    # NOTE [no lookahead without streams]: nothing overlaps on the CPU path
    assert _pulled_after_first("cpu", depth=3) == [0]


@pytest.mark.gpu
def test_cuda_path_runs_depth_ahead() -> None:
    assert _pulled_after_first("cuda", depth=3) == [0, 1, 2, 3]  # handed over + `depth` in flight


def test_len_without_len_and_validation() -> None:
    p = DevicePrefetcher(iter([torch.ones(1)]), "cpu")
    with pytest.raises(TypeError, match="no len"):
        len(p)
    with pytest.raises(ValueError, match="depth"):
        DevicePrefetcher([], "cpu", depth=0)
    with pytest.raises(TypeError, match="batch_transforms"):
        DevicePrefetcher([], "cpu", batch_transforms=[3])
    with pytest.raises(TypeError, match="iterable"):
        DevicePrefetcher(3, "cpu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys"):
        list(DevicePrefetcher([torch.ones(1)], "cpu", batch_transforms=abs, keys="image"))


def test_loader_device_path_on_cpu_with_workers() -> None:
    data = [{"image": torch.full((3, 2, 2), i, dtype=torch.uint8), "label": i} for i in range(6)]
    loader = dataforge.build_loader(
        data, batch_size=4, num_workers=1, device="cpu",
        batch_transforms=lambda x: x.float() / 255, transform_keys="image",
    )
    out = list(loader)
    loader.close()
    assert [b["image"].dtype for b in out] == [torch.float32, torch.float32]
    assert out[1]["label"].tolist() == [4, 5] and loader.pin_memory is False


@pytest.mark.gpu
def test_cuda_prefetch_matches_cpu_and_uses_pinned_side_stream_copies() -> None:
    dl = torch.utils.data.DataLoader(
        [torch.full((64, 64), i, dtype=torch.uint8) for i in range(12)], batch_size=4, pin_memory=True
    )
    out = list(DevicePrefetcher(dl, "cuda", batch_transforms=lambda x: x.float() / 255, depth=3))
    assert all(b.is_cuda and b.dtype == torch.float32 for b in out)
    ref = [(b.float() / 255) for b in dl]
    assert all(torch.equal(a.cpu(), b) for a, b in zip(out, ref))


@pytest.mark.gpu
def test_cuda_loader_delivers_on_device_and_resumes() -> None:
    from helpers import run_test_save_load_state

    data = [{"image": torch.full((3, 8, 8), i, dtype=torch.uint8), "label": i} for i in range(10)]

    def make():
        return dataforge.build_loader(
            data, batch_size=3, shuffle=True, num_workers=0, device="cuda",
            batch_transforms=lambda x: x.float(), transform_keys="image",
        )

    loader = make()
    assert loader.pin_memory is True
    first = next(iter(loader))
    assert first["image"].is_cuda and first["label"].is_cuda
    run_test_save_load_state(make)


@pytest.mark.gpu
def test_cuda_prefetch_is_correct_under_a_busy_compute_stream() -> None:
    # a long kernel on the current stream while the next copies run on the side stream;
    # values must still be exactly the host values (stream sync + record_stream)
    host = [torch.randint(0, 255, (256, 1024), dtype=torch.uint8) for _ in range(8)]
    a = torch.randn(2048, 2048, device="cuda")
    got = []
    for b in DevicePrefetcher(host, "cuda", depth=3):
        for _ in range(5):
            a = a @ a
            a = a / a.norm()
        got.append(b.clone())
        del b
    torch.cuda.synchronize()
    assert all(torch.equal(g.cpu(), h) for g, h in zip(got, host))


def test_auto_keys_pick_image_or_first_element() -> None:
    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    d = list(DevicePrefetcher(_batches(), "cpu", batch_transforms=double))
    assert d[1]["image"].tolist() == [[2, 2, 2], [2, 2, 2]] and d[1]["label"].tolist() == [1, 1]
    t = list(DevicePrefetcher([Pair(torch.ones(1), torch.ones(1))], "cpu", batch_transforms=double))
    assert t[0].image.tolist() == [2.0] and t[0].label.tolist() == [1.0]
    whole = list(DevicePrefetcher([(torch.ones(1),)], "cpu", batch_transforms=lambda b: len(b), keys=None))
    assert whole == [1]
    with pytest.raises(KeyError, match="transform_keys"):
        list(DevicePrefetcher([{"pixels": torch.ones(1)}], "cpu", batch_transforms=double))
