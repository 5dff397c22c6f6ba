"""Property tests of the batch plan and resume (main process only: fast)."""

from __future__ import annotations

import json

import torch
from hypothesis import given
from hypothesis import strategies as st

import dataforge


@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 9),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 5),
    data=st.data(),
)
def test_resume_at_any_batch_yields_the_rest(n, batch_size, drop_last, shuffle, seed, epoch, data) -> None:
    def make():
        loader = dataforge.build_loader(
            torch.arange(n), batch_size=batch_size, shuffle=shuffle, seed=seed,
            drop_last=drop_last, num_workers=0,
        )
        loader.set_epoch(epoch)
        return loader

    full = [b.tolist() for b in make()]
    assert len(full) == len(make())
    flat = [i for b in full for i in b]
    assert len(set(flat)) == len(flat)  # no index twice in an epoch
    assert len(flat) == (n // batch_size) * batch_size if drop_last else sorted(flat) == list(range(n))
    k = data.draw(st.integers(0, len(full)))
    a = make()
    it = iter(a)
    head = [next(it).tolist() for _ in range(k)]
    state = json.loads(json.dumps(a.state_dict()))
    b = make() if k < len(full) else dataforge.build_loader(
        torch.arange(n), batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
        num_workers=0,
    )
    b.load_state_dict(state)
    rest = [x.tolist() for x in b]
    assert head == full[:k]
    if k < len(full):
        assert rest == full[k:]
    else:  # after the last batch: the next epoch, whole
        nxt = make()
        nxt.set_epoch(epoch + 1)
        assert state["epoch"] == epoch + 1 and rest == [x.tolist() for x in nxt]
