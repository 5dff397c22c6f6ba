"""``engine="auto"``: the rule of NOTE [auto engine] (loading/auto.py), as the loader applies it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision.transforms import v2

import dataforge
from dataforge.loading.auto import auto_engine, c_image_transform
from dataforge.synthetic import make_image_folder
from dataforge.transforms.image import Torchvision, eval_transforms, train_transforms, with_decode

THREADS = "auto: ImageFolder with C image transforms (decode and resize release the GIL)"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    out: Path = tmp_path_factory.mktemp("auto_engine")
    return str(make_image_folder(out, num_images=12, num_classes=2, imbalance=1.0,
                                 sizes=(40, 64), progress=False))


def test_the_natural_image_code_gets_threads_and_says_why(root: str) -> None:
    ds = dataforge.ImageFolder(root, transform=train_transforms(32))
    loader = dataforge.build_loader(ds, batch_size=4, shuffle=True, num_workers=2, drop_last=True)
    assert loader.engine == "thread"
    assert loader.engine_reason == THREADS
    assert loader.stats()["engine"] == "thread" and loader.stats()["engine_reason"] == THREADS
    assert "engine='thread' (auto: ImageFolder" in repr(loader)
    batches = list(loader)
    assert len(batches) == 3 and batches[0]["image"].shape == (4, 3, 32, 32)
    loader.close()


def test_wrapped_image_folders_and_torchvision_transforms_get_threads(root: str) -> None:
    enc = dataforge.ImageFolder(root, decode=False)
    train, val = enc.split([0.5, 0.5], seed=0, stratify=True)
    tv = v2.Compose([v2.RandomResizedCrop(32, antialias=True), v2.RandomHorizontalFlip()])
    for ds in (
        train.map(train_transforms(32), seed=0),                     # the README's code
        val.map(with_decode(eval_transforms(32))),
        dataforge.ImageFolder(root, transform=tv).subset([0, 1, 2]),
        dataforge.ImageFolder(root).map(Torchvision(tv)).cache(),
        torch.utils.data.Subset(dataforge.ImageFolder(root), [0, 1]),
    ):
        assert auto_engine(ds, 2) == (("thread", THREADS)), repr(ds)


def test_python_code_anywhere_in_the_pipeline_gets_processes(root: str) -> None:
    class MyFolder(dataforge.ImageFolder):
        pass

    def my_fn(x: Any) -> Any:
        return x

    cases = [
        (dataforge.ImageFolder(root, transform=lambda x: x), "ImageFolder's transform function"),
        (dataforge.ImageFolder(root, transform=v2.Compose([v2.Lambda(my_fn)])),
         "ImageFolder's transform Compose"),
        (dataforge.ImageFolder(root).map(my_fn), "the map fn my_fn"),
        (MyFolder(root), "the dataset MyFolder"),
        (torch.arange(8), "the dataset Tensor"),
    ]
    for ds, blocker in cases:
        choice = auto_engine(ds, 2)
        assert choice == ("process", f"auto: {blocker} is not known to release the GIL")


def test_options_only_processes_honour_pick_processes(root: str) -> None:
    ds = dataforge.ImageFolder(root, transform=train_transforms(32))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"num_workers": 0}, "auto: num_workers=0 loads in the calling thread"),
        ({"num_workers": 2, "worker_init_fn": print}, "auto: worker_init_fn is given (worker processes only)"),
        ({"num_workers": 2, "multiprocessing_context": "spawn"},
         "auto: multiprocessing_context is given (worker processes only)"),
        ({"num_workers": 2, "persistent_workers": True},
         "auto: persistent_workers=True (worker processes only)"),
    ]
    for kwargs, reason in cases:
        loader = dataforge.build_loader(ds, batch_size=4, **kwargs)
        assert (loader.engine, loader.engine_reason) == ("process", reason), kwargs
        loader.close()
    with_threads = dataforge.build_loader(ds, batch_size=4, num_workers=2, persistent_workers=False)
    assert with_threads.engine == "thread" and with_threads.persistent_workers is False


def test_iterable_datasets_and_explicit_engines(root: str) -> None:
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self) -> Any:
            return iter(range(6))

    loader = dataforge.build_loader(Stream(), batch_size=2, num_workers=2)
    assert (loader.engine, loader.engine_reason) == (
        "process", "auto: an iterable dataset (it may shard by get_worker_info(), which threads do not answer)")
    loader.close()
    ds = dataforge.ImageFolder(root, transform=train_transforms(32))
    forced = dataforge.build_loader(ds, batch_size=4, num_workers=2, engine="process")
    assert (forced.engine, forced.engine_reason) == ("process", "engine='process' was passed")
    forced.close()
    with pytest.raises(ValueError, match=r"engine must be one of \('auto', 'process', 'thread'\)"):
        dataforge.build_loader(ds, batch_size=4, engine="gpu")


def test_build_image_loaders_defaults_to_threads(root: str) -> None:
    train, val = dataforge.build_image_loaders(
        root, batch_size=4, size=32, num_workers=2, val_fraction=0.5)
    assert train.engine == val.engine == "thread"
    assert next(iter(train))["image"].dtype == torch.float32
    train.close()
    val.close()


def test_c_image_transform_judges_containers_by_their_children() -> None:
    assert c_image_transform(None)
    assert c_image_transform(train_transforms(8))
    assert c_image_transform(v2.Compose([v2.RandomResizedCrop(8), v2.RandomHorizontalFlip()]))
    assert not c_image_transform(v2.Compose([v2.RandomResizedCrop(8), v2.Lambda(lambda x: x)]))
    assert not c_image_transform(Torchvision(lambda x: x))
    assert not c_image_transform(print)
