"""Sampler state: one versioned JSON format, global progress, elastic resume."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from helpers import to_plain
from torch.utils.data import BatchSampler, SequentialSampler

from dataforge.samplers import (
    BucketBatchSampler,
    ClassBalancedSampler,
    DistributedSamplerWrapper,
    WeightedSampler,
)
from dataforge.samplers import base as B

LABELS = np.array([0] * 40 + [1] * 13 + [2] * 5 + [3] * 1)
LENGTHS = np.random.default_rng(0).integers(1, 60, 200)


def makers(drop_last):
    return {
        "class_balanced": lambda reps, rank: ClassBalancedSampler(
            LABELS, strategy="sqrt", seed=3, num_replicas=reps, rank=rank, drop_last=drop_last),
        "class_balanced_long": lambda reps, rank: ClassBalancedSampler(
            LABELS, strategy="oversample", num_samples=503, seed=3, num_replicas=reps, rank=rank,
            drop_last=drop_last),
        "weighted": lambda reps, rank: WeightedSampler(
            np.arange(30) % 4, 97, seed=1, num_replicas=reps, rank=rank, drop_last=drop_last),
        "bucket": lambda reps, rank: BucketBatchSampler(
            LENGTHS, batch_size=8, seed=2, num_replicas=reps, rank=rank, drop_last=drop_last),
        "bucket_balanced": lambda reps, rank: BucketBatchSampler(
            LENGTHS, max_tokens=200, labels=np.arange(200) % 3, balance="oversample", seed=2,
            num_replicas=reps, rank=rank, drop_last=drop_last),
        "wrapper": lambda reps, rank: DistributedSamplerWrapper(
            BatchSampler(SequentialSampler(range(53)), 4, drop_last=False), num_replicas=reps,
            rank=rank, drop_last=drop_last),
    }


def take(sampler, k):
    it = iter(sampler)
    return [to_plain(next(it)) for _ in range(k)]


@pytest.mark.parametrize("kind", list(makers(False)))
@pytest.mark.parametrize(("old", "new"), [(1, 2), (2, 1), (2, 3), (3, 2)])
@pytest.mark.parametrize("drop_last", [True, False])
def test_elastic_resume_delivers_every_position_once(kind, old, new, drop_last):
    make = makers(drop_last)[kind]
    epoch = 1
    ref = make(1, 0)
    ref.set_epoch(epoch)
    order = [to_plain(x) for x in ref]  # the epoch's global order
    olds = [make(old, r) for r in range(old)]
    for s in olds:
        s.set_epoch(epoch)
    steps = len(olds[0]) // 2
    consumed = [take(s, steps) for s in olds]
    states = [json.loads(json.dumps(s.state_dict())) for s in olds]
    assert all(st == states[0] for st in states)  # the same dict on every rank
    assert states[0]["position"] == steps * old
    rest = []
    for r in range(new):
        s = make(new, r)
        s.load_state_dict(states[r % old])  # any rank's copy
        rest.append([to_plain(x) for x in s])
    assert len({len(x) for x in rest}) == 1  # equal counts on the new ranks
    got = [x for step in zip(*consumed) for x in step] + [x for step in zip(*rest) for x in step]
    key = lambda x: json.dumps(x)  # noqa: E731
    want = Counter(map(key, order))
    have = Counter(map(key, got))
    if drop_last:  # nothing repeated, only a tail shorter than a world size missing
        assert not have - want and sum((want - have).values()) < max(old, new)
    else:  # everything delivered; repeats are padding only, fewer than a world size per run
        assert not want - have and sum((have - want).values()) < old + new
    # positions taken in order: the old ranks' steps, then the new ranks' interleaved
    assert got[: len(order)] == order[: len(got)]


def test_state_keys_version_and_json():
    s = ClassBalancedSampler(LABELS, seed=0, num_replicas=2, rank=1)
    take(s, 3)
    state = s.state_dict()
    assert state[B.VERSION] == B.STATE_VERSION == 2
    assert state[B.POSITION] == 6 and state[B.NUM_REPLICAS] == 2 and state[B.EPOCH] == 0
    assert json.loads(json.dumps(state)) == state
    assert s.num_yielded == 3


def test_version_one_state_is_converted():
    s = ClassBalancedSampler(LABELS, seed=0, num_replicas=2, rank=0)
    head = take(s, 4)
    legacy = {k: v for k, v in s.state_dict().items() if k not in ("version", "position")}
    legacy["num_yielded"] = 4
    t = ClassBalancedSampler(LABELS, seed=0, num_replicas=2, rank=0)
    t.load_state_dict(legacy)
    full = ClassBalancedSampler(LABELS, seed=0, num_replicas=2, rank=0)
    assert head + list(t) == list(full)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"version": 3}, r"state\['version'\]=3 is not a version"),
        ({"position": -1}, r"state\['position'\] must be an int >= 0"),
        ({"position": "3"}, r"state\['position'\] must be an int"),
        ({"position": 10**30}, r"state\['position'\]=.* is past the end"),
        ({"epoch": 1.5}, r"state\['epoch'\] must be an int"),
        ({"num_replicas": 0}, r"state\['num_replicas'\] must be an int >= 1"),
        ({"seed": 4}, r"state\['seed'\]=4 does not match"),
        ({"sampler": "WeightedSampler"}, r"state\['sampler'\]='WeightedSampler' does not match"),
        ({"num_labels": 7}, r"state\['num_labels'\]=7 does not match"),
    ],
)
def test_bad_state_names_the_field(change, match):
    s = ClassBalancedSampler(LABELS, seed=0)
    with pytest.raises((ValueError, TypeError), match=match):
        s.load_state_dict({**s.state_dict(), **change})
    with pytest.raises(ValueError, match="no 'version' field"):
        s.load_state_dict({"epoch": 0})
    with pytest.raises(TypeError, match="state must be a dict"):
        s.load_state_dict([1])  # type: ignore[arg-type]
