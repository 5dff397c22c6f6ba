"""One arm of ``dataforge bench image`` alone, with the CPU of each of its threads.

Runs the arm (default ``dataforge-thread``) over the demo images (2,000 JPEGs of
300-500 px; ``--images photos``: 200 of 1-12 MP), batch 64, CPU, for ``--seconds`` after a three-batch warm-up and prints
samples/s, CPU-ms per sample (this process and its children), cores busy, user and
system time, and the share of a core each thread of this process used, with its sleeps
(voluntary context switches) per sample. It tells
where a thread engine's idle core time is: fetch threads below one core that never
wait for work are waiting for the GIL. ``--switch`` sets ``sys.setswitchinterval``
and ``--gc off|freeze`` the cyclic GC, for A/B rounds.

Run from the repository root: ``.venv/bin/python benchmarks/arm_threads.py``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import torch

from dataforge.bench.data import check_image_folder, demo_image_folder, photo_image_folder
from dataforge.bench.image_arms import make_arms


def _threads() -> dict[str, tuple[str, float, int]]:
    """Each thread of this process, by thread id: ``(name, CPU seconds, voluntary context
    switches)``. A fetch thread's voluntary switches are its sleeps: waits for the GIL,
    nearly all of them, when it never waits for work."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/status") as f:
                switches = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt"))
        except (OSError, StopIteration):
            continue
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / tick, switches)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", default="dataforge-thread", help="an arm of bench image (default dataforge-thread)")
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds (default 6)")
    p.add_argument("--workers", type=int, default=2, help="num_workers of the arm (default 2)")
    p.add_argument("--switch", type=float, default=None, help="sys.setswitchinterval in seconds")
    p.add_argument("--images", choices=("demo", "photos"), default="demo",
                   help="the demo set (2,000 JPEGs of 300-500 px) or the photo set (200 of 1-12 MP)")
    p.add_argument("--gc", choices=("on", "off", "freeze"), default="on", help="the cyclic GC (default on)")
    args = p.parse_args()
    if args.switch is not None:
        sys.setswitchinterval(args.switch)
    root = demo_image_folder(2000, progress=False) if args.images == "demo" else photo_image_folder(progress=False)
    arms = {a.name: a for a in make_arms(str(root), check_image_folder(str(root)), size=224, batch_size=64,
                                         device=torch.device("cpu"))}
    arm = arms[args.arm]
    if args.gc == "off":
        gc.disable()
    elif args.gc == "freeze":
        gc.collect()
        gc.freeze()
    it = iter(arm.make(args.workers))
    for _ in range(3):
        arm.consume(next(it))
    r0, th0, t0 = os.times(), _threads(), time.perf_counter()
    n = 0.0
    while time.perf_counter() - t0 < args.seconds:
        n += arm.consume(next(it))["samples"]
    wall = time.perf_counter() - t0
    r1, th1 = os.times(), _threads()
    user = (r1.user - r0.user) + (r1.children_user - r0.children_user)
    system = (r1.system - r0.system) + (r1.children_system - r0.children_system)
    print(f"{args.arm} workers={args.workers} switch={sys.getswitchinterval()} gc={args.gc}: "
          f"{n / wall:.0f} samples/s, {(user + system) / n * 1e3:.3f} CPU-ms/sample, "
          f"{(user + system) / wall:.2f} cores busy (user {user / wall:.2f}, system {system / wall:.2f})")
    for tid, (name, cpu, switches) in sorted(th1.items()):
        if tid in th0 and cpu - th0[tid][1] > 0.05 * wall:
            print(f"  thread {tid} {name}: {(cpu - th0[tid][1]) / wall:.2f} core, "
                  f"{(switches - th0[tid][2]) / n:.2f} sleeps (voluntary switches) per sample")
    os._exit(0)  # the arm's workers and threads end with the process


if __name__ == "__main__":
    main()
