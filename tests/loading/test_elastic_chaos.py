"""Elastic resume under a real process group: train-like loops interrupted at seeded random
steps resume in new processes under another world size, worker count and engine.

Each test spawns the old world's ranks (``torch.multiprocessing``, gloo on CPU), which
break out of the epoch at a random step, save ``loader.state_dict()`` and exit; then
the new world's ranks load it, finish the epoch and run the next one (the ranks are in
``elastic_chaos_main.py``). Checked, per NOTE [elastic resume] in loading/plan.py: every
rank saved the same dict; the samples of the interrupted epoch (old and new run, all
ranks) are the uninterrupted epoch's (where the epoch does not divide across ranks:
none lost, and the only repeats are the new run's padding, NOTE [exactly once] in
loading/state.py); every new rank got the same number of batches; the next epoch is
that of a run started at the new world size. In-process checks of the same contract,
with ranks simulated, are in ``test_elastic_resume.py``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import elastic_chaos_main as chaos
import pytest
import torch.multiprocessing as mp

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "datasets"))
from shard_files import write_tar_shards  # noqa: E402

SEED = 15  # the interrupt steps are drawn from this seed (printed on failure)
N, BS = 96, 6  # N divides by every world size and world size x BS below: no padding
ODD = 97  # the cases with this size pad: the rest of the epoch does not divide


SHARDS = [5, 7, 4, 6, 8, 5]  # samples per tar shard: 6 shards over 2 ranks x 2 workers


def _case(name: str, kind: str, world: tuple[int, int], workers: tuple[int, int],
          engine: tuple[str, str], n: int, rng: random.Random) -> dict[str, Any]:
    per_rank = -(-n // world[0])
    batches = -(-per_rank // BS)
    if kind == "bucket":  # its global batches (world 1), split over the ranks
        batches = -(-len(chaos.make_loader({"kind": kind, "n": n, "bs": BS}, 0, "process")) // world[0])
    if kind == "shards":  # equalize="pad": 2 workers x 8 samples a rank
        batches = 2 * -(-max(a + b for a, b in zip(SHARDS[::4], SHARDS[4::4] + [0])) // BS)
    return {
        "name": name, "kind": kind, "n": n, "bs": BS, "world": list(world),
        "workers": list(workers), "engine": list(engine), "stop": rng.randint(1, batches - 1),
    }


def _spawn(world: int, phase: str, cases: list[dict[str, Any]], out: Path, limit: float = 120) -> None:
    ctx = mp.start_processes(
        chaos.run_rank, args=(world, phase, cases, str(out)), nprocs=world, join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + limit
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {phase} phase under world size {world} did not finish in {limit} s")


def _run(cases: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Both phases of ``cases`` (one transition of world sizes); what every rank wrote."""
    w1, w2 = cases[0]["world"]
    _spawn(w1, "save", cases, tmp_path)
    _spawn(w2, "resume", cases, tmp_path)

    def read(phase: str, name: str, world: int) -> list[dict[str, Any]]:
        return [json.loads((tmp_path / f"{phase}_{name}_rank{r}.json").read_text()) for r in range(world)]

    return {c["name"]: (read("save", c["name"], w1), read("resume", c["name"], w2)) for c in cases}


def _ids(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def _check_shards(case: dict[str, Any], old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """Tar shards: a rank's state resumes its own workers' streams exactly under the saved
    world size (NOTE [iterable resume]); under another world or workers the gathered states
    deliver every sample of the old epoch's plan, its equalize pads included, plus the new
    consumers' pads (NOTE [elastic shards] in datasets/elastic.py)."""
    w1, w2 = case["world"]
    where = f"case {case} (seed {SEED})"
    planned = Counter(i for r in old for i in _ids(r["reference"]))
    assert set(planned) == {s * 1000 + j for s, n in enumerate(SHARDS) for j in range(n)}, where
    assert all(r["next"] == r["fresh_next"] for r in new), f"{where}: next epoch differs"
    if w1 != w2 or case["workers"][0] != case["workers"][1]:
        consumed = Counter(i for r in old for i in _ids(r["head"])) + Counter(
            i for r in new for i in _ids(r["tail"])
        )
        # equalize="pad": the remainder is padded again over the new consumers, at most one
        # repeat each, so that every new rank runs the same number of steps
        assert not planned - consumed, f"{where}: lost {planned - consumed}"
        pads = consumed - planned
        assert sum(pads.values()) < w2 * max(1, case["workers"][1]), f"{where}: repeated {pads}"
        assert len({len(r["tail"]) for r in new}) == 1, f"{where}: new ranks got unequal batch counts"
        return
    for r_old, r_new in zip(old, new):
        assert r_old["head"] + r_new["tail"] == r_old["reference"], f"{where}: rank {r_old['world']}"
    assert len({len(r["reference"]) for r in old}) == 1, f"{where}: ranks got unequal batch counts"


def _check(case: dict[str, Any], old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    w1, w2 = case["world"]
    where = f"case {case} (seed {SEED})"
    assert [r["world"] for r in old] == [[w1, r] for r in range(w1)], where
    assert [r["world"] for r in new] == [[w2, r] for r in range(w2)], where
    if case["kind"] == "shards":
        _check_shards(case, old, new)
        return
    states = [r["state"] for r in old]
    assert all(s == states[0] for s in states), f"{where}: ranks saved different states"
    assert all(len(r["head"]) == case["stop"] for r in old), where
    # the units of the epoch's global order: samples, or batches for a batch sampler
    units = (lambda bs: [tuple(b) for b in bs]) if case["kind"] == "bucket" else _ids
    reference = Counter(i for r in old for i in units(r["reference"]))
    consumed = Counter(i for r in old for i in units(r["head"])) + Counter(
        i for r in new for i in units(r["tail"])
    )
    order = units([b.tolist() for b in chaos.make_loader(case, 0, "process")])  # world 1
    pad = -(len(order) - states[0]["sampler_state"]["position"]) % w2
    assert not Counter(order) - consumed, f"{where}: lost {Counter(order) - consumed}"
    assert consumed - Counter(order) == Counter(order[:pad]), f"{where}: repeats beyond the padding"
    if pad == 0 and len(order) % w1 == 0:
        assert consumed == reference, where
    assert len({len(r["tail"]) for r in new}) == 1, f"{where}: new ranks got unequal batch counts"
    assert all(r["end_state"]["epoch"] == 1 and r["end_state"]["batches_yielded"] == 0 for r in new), where
    assert [r["next"] for r in new] == [r["fresh_next"] for r in new], f"{where}: next epoch differs"


# NOTE: one transition of world sizes per test (two spawns: the old ranks, the new ranks);
# its cases pair the sampler kinds with worker counts 0 <-> 2 and both engines
_TRANSITIONS = {
    "1to2": [
        ("shuffle", (0, 2), ("process", "thread"), N),
        ("balanced", (2, 0), ("process", "process"), N),
        ("weighted", (2, 2), ("thread", "process"), N),
        ("shuffle", (0, 0), ("thread", "process"), ODD),
        ("bucket", (0, 2), ("thread", "process"), ODD),
        ("shards", (0, 2), ("process", "thread"), N),
    ],
    "2to1": [
        ("shuffle", (2, 0), ("process", "process"), N),
        ("balanced", (0, 2), ("process", "thread"), N),
        ("weighted", (2, 2), ("process", "thread"), N),
        ("shards", (2, 2), ("thread", "process"), N),
    ],
    "2to2": [
        ("shards", (2, 2), ("process", "thread"), N),
        ("shards", (2, 0), ("thread", "process"), N),
        ("shuffle", (2, 0), ("process", "thread"), ODD),
    ],
    "2to3": [
        ("bucket", (2, 0), ("process", "thread"), N),
        ("shuffle", (2, 2), ("thread", "process"), N),
        ("balanced", (2, 2), ("process", "process"), N),
        ("weighted", (0, 2), ("process", "process"), N),
        ("balanced", (0, 0), ("process", "thread"), ODD),
        ("shards", (2, 2), ("thread", "thread"), N),
    ],
}


@pytest.mark.distributed
@pytest.mark.timeout(240)
@pytest.mark.parametrize("transition", sorted(_TRANSITIONS))
def test_interrupted_epoch_resumes_under_another_world(transition: str, tmp_path: Path) -> None:
    w1, w2 = (int(x) for x in transition.split("to"))
    rng = random.Random(f"{SEED}-{transition}")
    cases = [
        _case(f"{kind}{i}", kind, (w1, w2), workers, engine, n, rng)
        for i, (kind, workers, engine, n) in enumerate(_TRANSITIONS[transition])
    ]
    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar_shards(shards, SHARDS)
    for case in cases:
        case["shards"] = str(shards)
    results = _run(cases, tmp_path)
    for case in cases:
        _check(case, *results[case["name"]])

