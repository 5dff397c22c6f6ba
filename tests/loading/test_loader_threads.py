"""Intra-op threads under the thread engine and the CPU consumer; no abort at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from dataforge import build_loader


class _ThreadsSeen(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i, torch.get_num_threads()])


def test_thread_engine_workers_run_single_threaded_and_restore_the_global():
    before = torch.get_num_threads()
    loader = build_loader(_ThreadsSeen(), 4, num_workers=2, engine="thread")
    seen = torch.cat(list(loader))
    assert sorted(seen[:, 0].tolist()) == list(range(16))
    assert set(seen[:, 1].tolist()) == {1}
    assert torch.get_num_threads() == before


def test_cpu_batch_transforms_run_with_one_thread_when_workers_are_busy():
    before = torch.get_num_threads()
    seen: list[int] = []

    def tf(x: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return x

    for workers, engine in ((2, "thread"), (2, "process")):
        seen.clear()
        list(build_loader(_ThreadsSeen(), 4, num_workers=workers, engine=engine, device="cpu",
                          batch_transforms=tf, transform_keys=None))
        assert seen == [1] * 4, (engine, seen)
        assert torch.get_num_threads() == before
    seen.clear()
    list(build_loader(_ThreadsSeen(), 4, num_workers=0, device="cpu", batch_transforms=tf,
                      transform_keys=None))
    assert seen == [before] * 4  # no workers: the consumer keeps its threads


def test_exit_with_a_live_thread_pool_does_not_abort(tmp_path):
    # NOTE [threads at exit] in thread_engine.py: workers busy inside torch ops while
    # the interpreter shuts down used to abort the process.
    script = textwrap.dedent(
        """
        import torch
        from dataforge import build_loader

        class Slow(torch.utils.data.Dataset):
            def __len__(self):
                return 10_000
            def __getitem__(self, i):
                x = torch.rand(3, 256, 256)
                return torch.nn.functional.interpolate(x[None], size=(200, 200), mode="bilinear",
                                                       antialias=True)[0]

        loader = build_loader(Slow(), 32, num_workers=2, engine="thread", prefetch_factor=4)
        it = iter(loader)
        next(it)
        print("exiting with workers busy")
        """
    )
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "terminate called" not in proc.stderr
        assert "exiting with workers busy" in proc.stdout


# NOTE [global RNGs under threads] in dataforge/_rng.py: seeded maps must give the thread
# engine the same batches as the process engine and as no workers. Each fn below has a
# GIL-releasing torch op between its draws, so without the lock another thread re-seeds
# the global RNGs mid-sample (before the fix, about half the samples differed).
_IMAGES = [torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(k)) for k in range(4)]


def _global_draws(i: int) -> torch.Tensor:
    import random

    import numpy as np

    a = torch.rand(2)
    torch.nn.functional.interpolate(torch.rand(1, 3, 96, 96), size=(80, 80), mode="bilinear",
                                    antialias=True)  # releases the GIL
    return torch.cat([a, torch.rand(1), torch.tensor([float(np.random.rand()), random.random()])])


def _seeded_pipelines():
    from torchvision.transforms import v2

    from dataforge.datasets import from_sequence
    from dataforge.transforms.image import Torchvision, train_transforms

    images = from_sequence(list(range(96))).map(lambda i: _IMAGES[i % 4])
    extra = {}
    try:
        import albumentations as A

        from dataforge.transforms.albumentations import Albumentations

        extra["albumentations adapter, its own state"] = images.map(
            Albumentations(A.Compose([A.RandomResizedCrop((32, 32)), A.HorizontalFlip()])), seed=5)
    except ImportError:  # the optional extra
        pass
    return {**extra,
        "preset, own generator": images.map(train_transforms(32), seed=5),
        "torchvision adapter, global torch RNG": images.map(
            Torchvision(v2.Compose([v2.RandomResizedCrop(32, antialias=True),
                                    v2.RandomHorizontalFlip()])), seed=5),
        "plain fn, torch + numpy + random globals": from_sequence(list(range(96))).map(
            _global_draws, seed=5),
    }


def test_seeded_maps_give_the_same_batches_on_every_engine():
    for name, ds in _seeded_pipelines().items():
        ref = torch.cat(list(build_loader(ds, 8, num_workers=0, seed=1)))
        assert len(ref.unique(dim=0)) > len(ref) // 2, name  # the draws do vary
        for engine in ("thread", "thread", "process"):
            got = torch.cat(list(build_loader(ds, 8, num_workers=2, engine=engine, seed=1)))
            differ = int((got != ref).flatten(1).any(1).sum())
            assert differ == 0, f"{name}, {engine} engine: {differ} of {len(ref)} samples differ"


def test_seeded_map_hands_a_generator_only_to_fns_that_name_one():
    from dataforge._rng import accepts_generator
    from dataforge.datasets import from_sequence

    seen: list[object] = []

    def named(x, *, generator=None):
        seen.append(generator)
        return x

    def kwargs_only(x, **kw):
        seen.append(kw.get("generator"))
        return x

    assert accepts_generator(named, via_kwargs=False)
    assert not accepts_generator(kwargs_only, via_kwargs=False)
    assert not accepts_generator(len, via_kwargs=False)
    from_sequence([0, 1]).map(named, seed=0)[1]
    from_sequence([0, 1]).map(kwargs_only, seed=0)[1]
    from_sequence([0, 1]).map(named)[1]
    assert isinstance(seen[0], torch.Generator) and seen[1:] == [None, None]
