from __future__ import annotations

import pytest
import torch

from dataforge.transforms import Compose, OneOf, RandomApply
from dataforge.transforms.compose import accepts_generator, call


def add_noise(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    return x + torch.rand(x.shape, generator=generator)


def global_noise(x: torch.Tensor) -> torch.Tensor:  # draws from the global RNG
    return x + torch.rand(x.shape)


def test_compose_applies_in_order_and_passes_generator():
    t = Compose([lambda x: x * 2, add_noise, global_noise])
    x = torch.zeros(5)
    a = t(x, generator=torch.Generator().manual_seed(3))
    b = t(x, generator=torch.Generator().manual_seed(3))
    c = t(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len(t) == 3 and "Compose" in repr(t)


def test_generator_does_not_disturb_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    Compose([global_noise])(torch.zeros(2), generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(3), expected)


def test_random_apply_probability_and_reproducibility():
    t = RandomApply(lambda x, **kw: x + 1, p=0.3)  # takes generator=: no global-RNG seeding
    g = torch.Generator().manual_seed(0)
    outs = [t(0, generator=g) for _ in range(2000)]
    assert 0.25 < sum(outs) / len(outs) < 0.35
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [t(0, generator=g1) for _ in range(50)] == [t(0, generator=g2) for _ in range(50)]
    assert RandomApply(lambda x: x + 1, p=0.0)(0) == 0
    assert RandomApply(lambda x: x + 1, p=1.0)(0) == 1


def test_one_of_weights_and_reproducibility():
    t = OneOf([lambda x, **kw: "a", lambda x, **kw: "b"], weights=[3, 1])
    g = torch.Generator().manual_seed(0)
    outs = [t(None, generator=g) for _ in range(2000)]
    assert OneOf([lambda x: "a", lambda x: "b"])(None, generator=g) in ("a", "b")
    assert 0.7 < outs.count("a") / len(outs) < 0.8
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert [t(0, generator=g1) for _ in range(50)] == [t(0, generator=g2) for _ in range(50)]


def test_accepts_generator_detection():
    assert accepts_generator(add_noise)
    assert accepts_generator(lambda x, **kw: x)
    assert not accepts_generator(global_noise)
    assert not accepts_generator(len)  # builtin: no inspectable signature needed
    assert call(global_noise, torch.zeros(1), None).shape == (1,)


@pytest.mark.parametrize(
    ("make", "exc", "words"),
    [
        (lambda: Compose(lambda x: x), TypeError, "list"),
        (lambda: Compose([1]), TypeError, "transforms[0]"),
        (lambda: RandomApply(lambda x: x, p=1.5), ValueError, "p must be"),
        (lambda: RandomApply("nope"), TypeError, "transform must be callable"),
        (lambda: OneOf([]), TypeError, "non-empty"),
        (lambda: OneOf([len, len], weights=[1]), ValueError, "weights"),
        (lambda: OneOf([len], weights=[-1]), ValueError, "weights"),
    ],
)
def test_validation(make, exc, words):
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        make()
