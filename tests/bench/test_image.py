from __future__ import annotations

import pytest
import torch

from dataforge.bench import image, image_arms, pipelines
from dataforge.bench.data import check_image_folder
from dataforge.bench.report import ceiling_exceeded, validate_result
from dataforge.bench.runner import cores_in_use

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def arms(tiny_images):
    items = check_image_folder(tiny_images)
    return image_arms.make_arms(str(tiny_images), items, size=32, batch_size=4, device=CPU)


def test_arm_names(arms):
    assert [a.name for a in arms] == ["stock", "stock-tuned", "dataforge-process", "dataforge-thread",
                                      "natural", "torchdata-nodes", "dataforge-gpu-decode",
                                      "dali-cpu", "spdl", "ffcv"]
    assert [a.pipeline for a in arms] == (["stock"] + ["dataforge"] * 5
                                          + ["gpu-decode", "dali-cpu", "spdl", "ffcv"])


def test_natural_arm_gets_the_thread_engine_without_asking(arms):
    natural = next(a for a in arms if a.name == "natural")
    finished = natural.make(2)
    loader = finished.loader
    assert (loader.engine, loader.num_workers, loader.drop_last) == ("thread", 2, True)
    assert loader.engine_reason.startswith("auto: ImageFolder")
    batch = next(iter(finished))
    assert natural.consume(batch) == {"samples": 4.0}
    loader.close()


def test_image_sets_and_their_errors(tiny_images, monkeypatch):
    from dataforge.bench import data
    from dataforge.bench.common import BenchError

    with pytest.raises(BenchError, match="--images must be one of demo, photos, got 'big'"):
        image.run(images="big", data=str(tiny_images))
    with pytest.raises(BenchError, match="--images photos generates data, --data"):
        image._image_root(str(tiny_images), "photos", None, False)
    seen = []
    monkeypatch.setattr(data, "photo_image_folder", lambda n, progress: seen.append(n) or "P")
    assert image._image_root(None, "photos", None, True) == "P"
    assert image._image_root(None, "photos", 5, False) == "P"
    assert seen == [image.QUICK_PHOTOS, 5]


def test_config_fills_the_defaults_and_is_the_results_config(tiny_images):
    cfg = image._config(quick=True, seconds=None, device="cpu", data=str(tiny_images), workers=None,
                        batch_size=None, repeats=2, image_size=32, num_images=None, warmup=None,
                        images="demo")
    assert (cfg.batch_size, cfg.seconds, cfg.warmup) == (32, 1.0, 0.3)
    assert cfg.window == 0.5  # NOTE [limit window]: quick runs time the limit over half a window
    assert cfg.to_dict() == {
        "data": str(tiny_images), "demo_data": False, "images": "data", "num_samples": 12,
        "batch_size": 32, "image_size": 32, "workers": cfg.workers, "seconds": 1.0,
        "warmup_s": 0.3, "repeats": 2, "device": "cpu", "quick": True,
        "virtual_length": image_arms.tiled_length(12)}


def test_gpu_decode_arm_is_absent_on_the_cpu_with_a_note(arms):
    gpu = next(a for a in arms if a.name == "dataforge-gpu-decode")
    assert gpu.absent and "--device cuda" in gpu.absent


def test_gpu_decode_loader_finishes_batches_of_file_bytes(tiny_images):
    """The arm's loader, run on its CPU path: threads read bytes, the transform finishes."""
    from dataforge.datasets.image_folder import ImageFolder

    ds = ImageFolder(tiny_images, decode=False)
    loader = image_arms.gpu_decode_loader(ds, 2, size=32, batch_size=4, device=CPU, decode="cpu")
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == len(ds)
    for b in batches:
        x = b["image"]
        assert x.dtype == torch.float32 and x.shape == (len(b["label"]), 3, 32, 32)
        assert x.min() < 0 < x.max()
        assert [ds.classes.index(p.split("/")[-2]) for p in b["path"]] == b["label"].tolist()


def test_every_arm_yields_normalized_float_batches_of_the_same_shape(arms):
    for arm in arms:
        if arm.absent:
            continue
        batch = next(iter(arm.make(0)))
        x = pipelines.images(batch)
        assert x.dtype == torch.float32 and tuple(x.shape) == (4, 3, 32, 32), arm.name
        assert x.min() < 0 < x.max(), f"{arm.name}: not normalized"
        assert arm.consume(batch) == {"samples": 4.0}


def test_threaded_peers_with_one_worker(arms):
    for arm in arms:
        if arm.absent or arm.name not in ("dataforge-thread", "torchdata-nodes"):
            continue
        it = iter(arm.make(1))
        assert arm.consume(next(it)) == {"samples": 4.0}


def test_consumer_refuses_unfinished_batches():
    consume = image_arms.consumer(CPU)
    with pytest.raises(RuntimeError, match="expected a float NCHW batch"):
        consume({"image": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)})
    with pytest.raises(RuntimeError, match="expected a float NCHW batch"):
        consume((torch.zeros(3, 8, 8), 0))


def test_stock_pipeline_is_the_tutorial_one(tiny_images):
    ds = image_arms.StockImageDataset(check_image_folder(tiny_images), 32)
    x, label = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and label == 0
    names = [type(t).__name__ for t in ds.transform.transforms]
    assert names == ["ToImage", "RandomResizedCrop", "RandomHorizontalFlip", "ToDtype", "Normalize"]


def test_limit_per_sample(tiny_images, arms):
    from dataforge.datasets.image_folder import ImageFolder
    from dataforge.transforms.image import train_transforms

    items = check_image_folder(tiny_images)
    limit = image.measure_limit(image_arms.StockImageDataset(items, 32),
                                ImageFolder(tiny_images, transform=train_transforms(32)),
                                len(items), batch_size=4, device=CPU, repeats=1, min_seconds=0.02)
    assert set(limit) == {"stock", "dataforge"} and all(0 < v < 1 for v in limit.values())
    assert torch.get_num_threads() >= 1


def test_run_small(tiny_images, tmp_path):
    r = image.run(data=str(tiny_images), workers=[0], seconds=0.05, repeats=1, image_size=32,
                  batch_size=4, warmup=0.0, out=str(tmp_path))
    validate_result(r, "image")
    assert r["config"]["num_samples"] == 12 and r["config"]["workers"] == [0]
    ok = [a for a in r["arms"] if a["status"] == "ok"]
    assert {a["arm"] for a in ok} >= {"stock", "stock-tuned"}
    assert all(a["ratio_to_stock"] > 0 for a in ok)
    # the peers (bench.peers) run their own pipelines: no limit, no fraction of it
    assert all(a["fraction_of_limit"] > 0 for a in ok if a["pipeline"] in r["limit"]["per_sample_ms"])
    # NOTE [parallel ceiling]: measured whenever the run uses more than one core
    ceiling = r["ceiling"]["by_workers"]
    if cores_in_use(0) > 1:
        assert ceiling["0"] > 0 and r["ceiling"]["fraction_of_limit"]["0"] > 0
        # NOTE [ceiling above the arms]: no fraction of a ceiling that an arm beat (a 0.05 s
        # window on a busy machine can mis-measure it); else one per dataforge arm
        fractions = [a["fraction_of_ceiling"] for a in ok if a["pipeline"] == "dataforge"]
        if ceiling_exceeded(r["arms"], ceiling, "dataforge"):
            assert fractions and all(f is None for f in fractions)
        else:
            assert fractions and all(f > 0 for f in fractions)
            assert "of ceiling" in image.format_table(r)
    else:
        assert ceiling == {}
    assert all("fraction_of_ceiling" not in a for a in ok if a["pipeline"] == "stock")
    if r.get("plot"):
        assert (tmp_path / "image.png").stat().st_size > 1000
    assert "stock-tuned" in image.format_table(r)


def test_ceiling_runs_processes_and_names_a_failure(tiny_images, tmp_path):
    from dataforge.bench.ceiling import measure_ceiling

    rate = measure_ceiling(str(tiny_images), size=32, batch_size=4, cores=2, normalize=True, seconds=0.05)
    assert rate > 0
    with pytest.raises(RuntimeError, match="parallel ceiling: .*"):
        measure_ceiling(str(tmp_path / "missing"), size=32, batch_size=4, cores=2, normalize=False,
                        seconds=0.05)


def test_batch_step_walks_every_file_once_per_pass_and_collates_each_batch():
    got, batches = [], []

    class Files:
        def __getitem__(self, i):
            got.append(i)
            return {"image": torch.full((1,), i)}

    step = pipelines.batch_step(Files(), pipelines.images, torch.stack, batches.append, 10, batch_size=4)
    for _ in range(5):  # 20 samples: two shuffled passes over the 10 files
        step()
    assert sorted(got[:10]) == list(range(10)) and got[10:] == got[:10]
    assert got[:10] != list(range(10))  # a shuffled order, not the files' order
    assert [b.shape for b in batches] == [(4, 1)] * 5
    assert torch.cat(batches).flatten().tolist() == got


def test_batch_step_fetches_a_batch_as_a_dataloader_does():
    calls = []

    class Batched:
        def __getitem__(self, i):
            raise AssertionError("fetched one by one although __getitems__ exists")

        def __getitems__(self, indices):
            calls.append(list(indices))
            return [{"image": torch.full((1,), i)} for i in indices]

    batches = []
    step = pipelines.batch_step(Batched(), pipelines.images, torch.stack, batches.append, 6, batch_size=3)
    step()
    step()
    assert [len(c) for c in calls] == [3, 3] and sorted(calls[0] + calls[1]) == list(range(6))
    assert torch.cat(batches).flatten().tolist() == calls[0] + calls[1]


@pytest.mark.gpu
def test_gpu_decode_arm_on_cuda(tiny_images):
    cuda = torch.device("cuda")
    items = check_image_folder(tiny_images)
    arms = image_arms.make_arms(str(tiny_images), items, size=32, batch_size=4, device=cuda)
    arm = next(a for a in arms if a.name == "dataforge-gpu-decode")
    assert arm.absent is None, arm.absent
    batch = next(iter(arm.make(2)))
    x = batch["image"]
    assert x.device.type == "cuda" and x.dtype == torch.float32 and x.shape == (4, 3, 32, 32)
    assert arm.consume(batch) == {"samples": 4.0}
