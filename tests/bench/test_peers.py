"""The peer arms of ``bench image`` (DALI-CPU, SPDL, FFCV): absent without their package,
and, where installed, batches of the benchmark's shape, dtype and range."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest
import torch

from dataforge.bench import peers
from dataforge.bench.data import check_image_folder
from dataforge.bench.pipelines import MEAN, STD

CPU = torch.device("cpu")
SIZE, BATCH = 32, 4
LOW = min((0 - m) / s for m, s in zip(MEAN, STD))
HIGH = max((1 - m) / s for m, s in zip(MEAN, STD))
# what a failed import looks like: a None entry in sys.modules makes `import` raise ImportError
BLOCK = {"dali-cpu": ["nvidia.dali"], "spdl": ["spdl.io", "spdl.pipeline"], "ffcv": ["ffcv.loader"]}
HINT = {"dali-cpu": "nvidia-dali-cuda130", "spdl": "FFmpeg 5.1", "ffcv": "make setup-peers"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def consume(batch):
    return {"samples": float(batch["image"].shape[0])}


@pytest.fixture(scope="module")
def items(tiny_images):
    return check_image_folder(tiny_images)


def _arms(items):
    return peers.peer_arms(items, length=4 * len(items), size=SIZE, batch_size=BATCH, device=CPU,
                           consume=consume)


@pytest.mark.parametrize("name", sorted(BLOCK))
def test_an_arm_is_absent_with_its_reason_when_its_import_fails(items, monkeypatch, name):
    for module in BLOCK[name]:
        monkeypatch.setitem(sys.modules, module, None)
    arm = next(a for a in _arms(items) if a.name == name)
    assert arm.absent is not None
    assert re.search(r"is not usable here \((ModuleNotFound|Import)Error: ", arm.absent)
    assert HINT[name] in arm.absent
    assert "\n" not in arm.absent and arm.pipeline == name
    assert list(arm.make(2)) == []


def test_arguments_are_checked(items):
    with pytest.raises(ValueError, match="items must list at least one"):
        peers.peer_arms([], length=10, size=SIZE, batch_size=BATCH, device=CPU, consume=consume)
    with pytest.raises(ValueError, match=r"length must be an int >= len\(items\) \(12\), got 5"):
        peers.peer_arms(items, length=5, size=SIZE, batch_size=BATCH, device=CPU, consume=consume)


def test_shuffled_order_tiles_every_file_equally():
    order = peers.shuffled_order(5, 20)
    assert len(order) == 20 and sorted(order) == sorted(list(range(5)) * 4)
    assert order != sorted(order) and order == peers.shuffled_order(5, 20)
    assert peers.threads_for(0) == 1 and peers.threads_for(3) == 3


def test_collate_hwc_makes_a_contiguous_nchw_batch():
    a = torch.arange(2 * 3 * 3, dtype=torch.uint8).reshape(2, 3, 3)
    x, y = peers.collate_hwc([(a, 1), (a + 1, 2)])
    assert x.shape == (2, 3, 2, 3) and x.is_contiguous() and y.tolist() == [1, 2]
    assert torch.equal(x[0], a.permute(2, 0, 1)) and torch.equal(x[1], (a + 1).permute(2, 0, 1))


def test_endless_starts_lazily_and_stops_when_its_iterator_or_it_is_closed():
    events = []
    e = peers.Endless(lambda: events.append("start") or "S", lambda s: iter([1, 2, 3]),
                      lambda b: b * 10, lambda s: events.append(f"stop {s}"))
    assert events == []
    it = iter(e)
    assert next(it) == 10 and events == ["start"]
    it.close()  # what the runner does at the end of a measured run
    assert events == ["start", "stop S"]
    e.close()  # already stopped: nothing more
    assert events == ["start", "stop S"]
    assert list(e) == [10, 20, 30]  # a new pass starts the peer again
    assert events == ["start", "stop S", "start", "stop S"]


def test_one_line_reasons():
    assert peers.one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert peers.one_line(OSError()) == "OSError"


def _check_batches(arm, n_batches=3):
    assert arm.absent is None, arm.absent
    loader = arm.make(2)
    try:
        it = iter(loader)
        for _ in range(n_batches):  # more batches than the 12 files: the data does not end
            b = next(it)
            x, y = b["image"], b["label"]
            assert x.dtype == torch.float32 and x.shape == (BATCH, 3, SIZE, SIZE)
            assert x.is_contiguous() and x.device.type == "cpu"
            assert float(x.min()) >= LOW - 1e-3 and float(x.max()) <= HIGH + 1e-3
            assert float(x.std()) > 0.05  # an image, not a constant
            assert y.shape == (BATCH,) and int(y.min()) >= 0 and int(y.max()) < 3
            assert arm.consume(b) == {"samples": float(BATCH)}
    finally:
        loader.close()


@pytest.mark.skipif(not _installed("nvidia.dali"), reason="nvidia-dali is not installed")
def test_dali_arm_batches(items):
    _check_batches(next(a for a in _arms(items) if a.name == "dali-cpu"), n_batches=5)


@pytest.mark.skipif(not _installed("spdl"), reason="spdl is not installed")
def test_spdl_arm_batches(items):
    _check_batches(next(a for a in _arms(items) if a.name == "spdl"), n_batches=5)


@pytest.mark.slow  # FFCV compiles its pipeline with numba before its first batch (~15 s)
@pytest.mark.skipif(not _installed("ffcv"), reason="ffcv is not installed")
def test_ffcv_arm_batches_and_its_beton_is_written_once(items, tmp_path):
    beton, write_s = peers.ensure_beton(items, cache=tmp_path)
    assert write_s > 0 and beton.endswith(".beton")
    assert peers.ensure_beton(items, cache=tmp_path) == (beton, write_s)  # reused, not rewritten
    arm = next(a for a in _arms(items) if a.name == "ffcv")
    assert ".beton written in" in arm.label
    _check_batches(arm, n_batches=4)


def test_ffcv_buffer_estimate_uses_the_largest_image(items):
    from PIL import Image

    largest = 0
    for path, _ in items:
        with Image.open(path) as im:
            largest = max(largest, im.width * im.height)
    assert peers.ffcv_buffer_bytes(items, 8) == largest * 3 * 8 * peers.FFCV_BATCH_SETS
    have = peers.available_bytes()
    assert have is None or have > 0


@pytest.mark.skipif(not _installed("ffcv"), reason="ffcv is not installed")
def test_ffcv_arm_is_absent_when_its_buffers_would_not_fit(items, monkeypatch):
    monkeypatch.setattr(peers, "available_bytes", lambda: 1024)
    arm = next(a for a in _arms(items) if a.name == "ffcv")
    assert arm.absent is not None and "GiB of decode buffers" in arm.absent
    assert "use a smaller --batch-size" in arm.absent
