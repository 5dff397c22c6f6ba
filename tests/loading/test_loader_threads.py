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
