"""On-device batch transforms: one op per whole ``(N, C, H, W)`` batch.

NOTE [uint8 until the device]: images travel from the workers as uint8 (4x fewer
bytes than float32) and are converted, augmented and normalized here, once per
batch, on whatever device the batch is on::

    gpu_aug = Compose([ToFloat(), RandomHorizontalFlip(), RandomBrightnessContrast(),
                       Normalize(), ChannelsLast()])
    for images, labels in loader:
        images = gpu_aug(images.cuda(non_blocking=True))

Each transform is a ``torch.nn.Module`` (so it composes with ``nn.Sequential``,
moves with ``.to()`` and can be compiled); the math lives in
:mod:`dataforge.transforms.functional`.

NOTE [batch randomness]: random transforms draw one parameter per sample from an
explicit ``torch.Generator``: the ``generator`` passed to the call, else the
transform's own (given to the constructor, or seeded from ``seed``). Parameters
are drawn on the generator's device and then moved to the batch's device, so a
CPU generator gives the same augmentation on CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from dataforge.transforms import functional as F
from dataforge.transforms.compose import accepts_generator

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ChannelsLast",
    "Compose",
    "Normalize",
    "RandomBrightnessContrast",
    "RandomHorizontalFlip",
    "ToFloat",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_batch(name: str, x: torch.Tensor, *, want: str | None = None) -> None:
    """Refuse non-tensors, non-NCHW shapes and the wrong dtype family, naming the fix."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor batch, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"{name} expects an (N, C, H, W) batch, got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) for a single image"
        )
    if want == "uint8" and x.dtype != torch.uint8:
        raise TypeError(
            f"{name} expects a uint8 batch, got {x.dtype}; it converts uint8 images "
            "to float, so apply it once, before any float transform"
        )
    if want == "float" and not x.is_floating_point():
        raise TypeError(
            f"{name} expects a float batch scaled to [0, 1], got {x.dtype}; "
            "put ToFloat() before it"
        )


def _check_prob(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


def _factor_range(name: str, value: float | tuple[float, float]) -> tuple[float, float]:
    """``b`` -> ``(max(0, 1 - b), 1 + b)`` as torchvision's ColorJitter; a pair is taken as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 (or a (min, max) pair), got {value!r}")
        return max(0.0, 1.0 - float(value)), 1.0 + float(value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
        and 0 <= value[0] <= value[1]
    ):
        return float(value[0]), float(value[1])
    raise ValueError(
        f"{name} must be a non-negative number or a (min, max) pair with 0 <= min <= max, "
        f"got {value!r}"
    )


class _RandomBatchTransform(nn.Module):
    """Plumbing for random batch transforms: owns the default generator."""

    def __init__(self, generator: torch.Generator | None, seed: int) -> None:
        super().__init__()
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator

    def _rand(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        g = generator if generator is not None else self.generator
        return torch.rand(n, generator=g, device=g.device).to(device, non_blocking=True)


class ToFloat(nn.Module):
    """uint8 ``(N, C, H, W)`` batch -> ``dtype``, scaled to ``[0, 1]`` when ``scale``.

    Args:
        scale: divide by 255.
        dtype: a floating dtype (float32, bfloat16, float16, float64).

    Example:
        >>> ToFloat()(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).max().item()
        1.0
    """

    def __init__(self, scale: bool = True, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype!r}")
        self.scale = bool(scale)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch("ToFloat", x, want="uint8")
        return F.to_float(x, self.dtype, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, dtype={self.dtype}"


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel on a float batch (ImageNet statistics by default).

    Args:
        mean: per-channel means (of the ``[0, 1]``-scaled image).
        std: per-channel standard deviations, all non-zero.

    Example:
        >>> x = torch.full((2, 3, 4, 4), 0.5)
        >>> Normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(x).abs().max().item()
        0.0
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        super().__init__()
        m = torch.as_tensor(mean, dtype=torch.float32).flatten()
        s = torch.as_tensor(std, dtype=torch.float32).flatten()
        if m.numel() == 0 or m.shape != s.shape:
            raise ValueError(
                f"mean and std must have one value per channel each, got mean={mean!r}, std={std!r}"
            )
        if bool((s == 0).any()):
            raise ValueError(f"std must not contain zeros, got {std!r}")
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("std", s, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch("Normalize", x, want="float")
        if x.shape[1] != self.mean.numel():
            raise ValueError(
                f"Normalize has {self.mean.numel()} channel statistics but the batch has "
                f"{x.shape[1]} channels (shape {tuple(x.shape)}); pass mean/std per channel"
            )
        return F.normalize(x, self.mean, self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


class RandomHorizontalFlip(_RandomBatchTransform):
    """Flip each sample left-right with probability ``p`` (any dtype; ``torch.where``).

    Args:
        p: per-sample flip probability.
        generator: default source of randomness (else one seeded from ``seed``).
        seed: seed of the default generator.

    Example:
        >>> x = torch.arange(4.0).reshape(1, 1, 1, 4)
        >>> RandomHorizontalFlip(p=1.0)(x).flatten().tolist()
        [3.0, 2.0, 1.0, 0.0]
    """

    def __init__(
        self, p: float = 0.5, *, generator: torch.Generator | None = None, seed: int = 0
    ) -> None:
        super().__init__(generator, seed)
        self.p = _check_prob(p)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch("RandomHorizontalFlip", x)
        mask = self._rand(x.shape[0], generator, x.device) < self.p
        return F.hflip(x, mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RandomBrightnessContrast(_RandomBatchTransform):
    """Per-sample random brightness then contrast on a float ``[0, 1]`` batch.

    With probability ``p`` a sample gets a brightness factor drawn uniformly from
    ``[1 - brightness, 1 + brightness]`` and a contrast factor from
    ``[1 - contrast, 1 + contrast]`` (or the ``(min, max)`` pairs given); other
    samples pass unchanged. Factors follow torchvision's ``adjust_brightness`` /
    ``adjust_contrast`` (see :mod:`dataforge.transforms.functional`).

    Args:
        brightness: spread of the brightness factor, or a ``(min, max)`` pair.
        contrast: spread of the contrast factor, or a ``(min, max)`` pair.
        p: per-sample probability of applying the change.
        generator: default source of randomness (else one seeded from ``seed``).
        seed: seed of the default generator.

    Example:
        >>> x = torch.full((8, 3, 4, 4), 0.5)
        >>> y = RandomBrightnessContrast(brightness=0.5, p=1.0, seed=0)(x)
        >>> y.shape, bool((y[:, 0, 0, 0] != 0.5).all())
        (torch.Size([8, 3, 4, 4]), True)
    """

    def __init__(
        self,
        brightness: float | tuple[float, float] = 0.2,
        contrast: float | tuple[float, float] = 0.2,
        p: float = 0.5,
        *,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(generator, seed)
        self.brightness = _factor_range("brightness", brightness)
        self.contrast = _factor_range("contrast", contrast)
        self.p = _check_prob(p)

    def factors(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(brightness, contrast)`` factors for ``n`` samples (1.0 where not applied)."""
        device = torch.device(device)
        apply = self._rand(n, generator, device) < self.p
        u_b = self._rand(n, generator, device)
        u_c = self._rand(n, generator, device)
        (b0, b1), (c0, c1) = self.brightness, self.contrast
        one = torch.ones((), device=device)
        b = torch.where(apply, b0 + (b1 - b0) * u_b, one)
        c = torch.where(apply, c0 + (c1 - c0) * u_c, one)
        return b, c

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch("RandomBrightnessContrast", x, want="float")
        b, c = self.factors(x.shape[0], generator, x.device)
        return F.adjust_contrast(F.adjust_brightness(x, b), c)

    def extra_repr(self) -> str:
        return f"brightness={self.brightness}, contrast={self.contrast}, p={self.p}"


class ChannelsLast(nn.Module):
    """Return the batch in ``torch.channels_last`` memory format (same shape and values).

    Example:
        >>> y = ChannelsLast()(torch.zeros(2, 3, 4, 4))
        >>> y.is_contiguous(memory_format=torch.channels_last)
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch("ChannelsLast", x)
        return x.contiguous(memory_format=torch.channels_last)


class _FusedToFloatNormalize:
    """``Normalize(ToFloat(x))`` in one buffer; reads the modules' current settings."""

    def __init__(self, to_float: ToFloat, normalize: Normalize) -> None:
        self.to_float = to_float
        self.normalize = normalize

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch("ToFloat", x, want="uint8")
        n = self.normalize
        if x.shape[1] != n.mean.numel():
            return n(self.to_float(x))  # let Normalize raise its channel-count error
        return F.to_float_normalize(x, n.mean, n.std, self.to_float.dtype, self.to_float.scale)


class Compose(nn.Module):
    """Apply batch transforms in order, passing one ``generator`` to the random ones.

    Args:
        transforms: batch transforms (modules or plain callables on a batch).

    Example:
        >>> t = Compose([ToFloat(), Normalize(mean=(0.0,), std=(1.0,))])
        >>> t(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).max().item()
        1.0
    """

    def __init__(self, transforms: Sequence[Callable[..., torch.Tensor]]) -> None:
        super().__init__()
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Sequence):
            raise TypeError(
                f"transforms must be a list of batch transforms, got {type(transforms).__name__}"
            )
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"transforms[{i}] must be callable, got {type(t).__name__}")
        self.transforms = list(transforms)
        self._modules_list = nn.ModuleList([t for t in transforms if isinstance(t, nn.Module)])
        # NOTE [fused normalize]: ToFloat directly followed by Normalize runs as one
        # op (functional.to_float_normalize); same result up to float rounding.
        plan: list[Callable[..., torch.Tensor]] = []
        i = 0
        while i < len(self.transforms):
            t = self.transforms[i]
            nxt = self.transforms[i + 1] if i + 1 < len(self.transforms) else None
            if type(t) is ToFloat and type(nxt) is Normalize:
                plan.append(_FusedToFloatNormalize(t, nxt))
                i += 2
            else:
                plan.append(t)
                i += 1
        self._plan = plan
        self._takes = [accepts_generator(t) for t in plan]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t, takes in zip(self._plan, self._takes):
            x = t(x, generator=generator) if takes and generator is not None else t(x)
        return x

    def __len__(self) -> int:
        return len(self.transforms)
