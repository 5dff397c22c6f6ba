"""Deterministic demo and test data: an image folder and a text corpus.

Both have a chosen long-tail class distribution and class-dependent content, so
a small model can learn them, and both are reproducible from a ``seed``: every
image / document draws from its own generator seeded from ``(seed, class,
index)``, never from the global RNG.

Example:
    >>> long_tail_counts(100, 4, imbalance=10.0)
    [55, 26, 13, 6]
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from dataforge._rng import mix_seed

_TEXT_SALT = 0x7E47
_NOISE_SALT = 0x4015E


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_imbalance(imbalance: object) -> float:
    if isinstance(imbalance, bool) or not isinstance(imbalance, (int, float)) or not (
        math.isfinite(imbalance) and imbalance >= 1
    ):
        raise ValueError(
            f"imbalance must be a finite number >= 1 (largest class / smallest class), got {imbalance!r}"
        )
    return float(imbalance)


def long_tail_counts(total: int, num_classes: int, imbalance: float) -> list[int]:
    """Class counts on an exponential profile summing exactly to ``total``.

    Class ``c`` gets a share proportional to ``imbalance ** (-c / (num_classes - 1))``,
    so the first class is about ``imbalance`` times the last; every class gets at
    least one item.
    """
    total = _check_int("total", total, 1)
    num_classes = _check_int("num_classes", num_classes, 1)
    imbalance = _check_imbalance(imbalance)
    if total < num_classes:
        raise ValueError(
            f"total must be >= num_classes so every class gets an item, got total={total} "
            f"and num_classes={num_classes}"
        )
    c = np.arange(num_classes, dtype=np.float64)
    weights = imbalance ** (-c / max(num_classes - 1, 1))
    exact = 1 + weights / weights.sum() * (total - num_classes)  # one each, rest by share
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return [int(x) for x in counts]


def _class_names(num_classes: int) -> list[str]:
    width = len(str(num_classes - 1))
    return [f"class_{c:0{width}d}" for c in range(num_classes)]


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _draw_image(rng: np.random.Generator, c: int, num_classes: int, w: int, h: int, noise: np.ndarray,
                difficulty: float = 0.0) -> Image.Image:
    # NOTE [difficulty]: 0 keeps every cue clean (trivially separable); towards 1 the
    # background hue spreads into neighbouring classes, the shape colour and kind
    # stop following the class, so small classes become genuinely hard to learn.
    hue = c / num_classes
    bg = _rgb(hue + rng.normal(0, 0.02 + 0.5 * difficulty / num_classes), 0.45, 0.75 + rng.uniform(-0.1, 0.1))
    fg_hue = rng.uniform(0, 1) if difficulty > 0 and rng.uniform() < difficulty else hue + 0.5
    fg = _rgb(fg_hue, 0.9, 0.95)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    r = int(min(w, h) * rng.uniform(0.2, 0.35))
    cx, cy = int(rng.uniform(r, w - r)), int(rng.uniform(r, h - r))
    kind = int(rng.integers(0, 4)) if difficulty > 0 and rng.uniform() < 0.5 * difficulty else c % 4
    if kind == 0:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif kind == 1:
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif kind == 2:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    else:
        for x in range(cx - r, cx + r, max(r // 3, 2)):
            draw.rectangle((x, cy - r, x + max(r // 6, 1), cy + r), fill=fg)
    oy, ox = int(rng.integers(0, noise.shape[0] - h + 1)), int(rng.integers(0, noise.shape[1] - w + 1))
    arr = np.asarray(img, dtype=np.int16) + noise[oy : oy + h, ox : ox + w]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_image_folder(
    root: str | os.PathLike[str],
    num_images: int = 2000,
    num_classes: int = 10,
    imbalance: float = 10.0,
    sizes: tuple[int, int] = (300, 500),
    seed: int = 0,
    quality: int = 90,
    progress: bool = True,
    difficulty: float = 0.0,
) -> Path:
    """Write a long-tailed folder of real JPEGs to ``root/<class_name>/*.jpg``.

    Each image has a random width and height in ``sizes`` (ImageNet-like by
    default), a background whose hue, and a foreground shape whose kind and
    color, depend on the class, plus noise. Existing files of the same names are
    overwritten.

    Args:
        root: output folder (created).
        num_images: total number of images.
        num_classes: number of classes (folders ``class_0``, ``class_1``, ...).
        imbalance: largest class count / smallest class count (see
            :func:`long_tail_counts`); 1 gives balanced classes.
        sizes: inclusive ``(min, max)`` side length in pixels.
        seed: the same seed writes the same bytes.
        quality: JPEG quality, 1-100.
        progress: show a tqdm progress bar.
        difficulty: in ``[0, 1]``; 0 draws clean class cues, higher values make
            the cues noisy and overlapping (see NOTE [difficulty]) so that a
            model must learn from many examples, and rare classes suffer.

    Returns:
        ``Path(root)``.

    Example:
        >>> import tempfile
        >>> root = make_image_folder(tempfile.mkdtemp(), num_images=5, num_classes=2,
        ...                          sizes=(16, 24), progress=False)
        >>> sorted(p.parent.name for p in root.glob("*/*.jpg"))
        ['class_0', 'class_0', 'class_0', 'class_0', 'class_1']
    """
    num_images = _check_int("num_images", num_images, 1)
    num_classes = _check_int("num_classes", num_classes, 1)
    seed = _check_int("seed", seed, 0)
    quality = _check_int("quality", quality, 1)
    if quality > 100:
        raise ValueError(f"quality must be an int in [1, 100], got {quality!r}")
    if (
        not isinstance(sizes, (tuple, list))
        or len(sizes) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes)
        or not 8 <= sizes[0] <= sizes[1]
    ):
        raise ValueError(f"sizes must be (min, max) ints with 8 <= min <= max, got {sizes!r}")
    if isinstance(difficulty, bool) or not isinstance(difficulty, (int, float)) or not 0 <= difficulty <= 1:
        raise ValueError(f"difficulty must be a number in [0, 1], got {difficulty!r}")
    counts = long_tail_counts(num_images, num_classes, imbalance)
    root = Path(root)
    lo, hi = int(sizes[0]), int(sizes[1])
    noise_rng = np.random.default_rng(mix_seed(seed, _NOISE_SALT))
    noise = noise_rng.normal(0.0, 18.0, size=(2 * hi, 2 * hi, 3)).astype(np.int16)
    names = _class_names(num_classes)
    with tqdm(total=num_images, desc="make_image_folder", unit="img", disable=not progress) as bar:
        for c, (name, count) in enumerate(zip(names, counts)):
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng(mix_seed(seed, c, i))
                w, h = (int(x) for x in rng.integers(lo, hi + 1, size=2))
                img = _draw_image(rng, c, num_classes, w, h, noise, float(difficulty))
                img.save(folder / f"{name}_{i:06d}.jpg", "JPEG", quality=quality)
                bar.update(1)
    return root


def _make_words(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words: list[str] = []
    while len(words) < count:
        n = int(rng.integers(2, 4))
        word = "".join(consonants[rng.integers(18)] + vowels[rng.integers(5)] for _ in range(n))
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def make_text_corpus(
    path: str | os.PathLike[str],
    num_docs: int = 1000,
    num_classes: int = 4,
    imbalance: float = 10.0,
    seed: int = 0,
    mean_length: float = 100.0,
    progress: bool = True,
    difficulty: float = 0.0,
) -> Path:
    """Write a long-tailed JSONL text corpus, one ``{"text": str, "label": int}`` a line.

    Document lengths (in words) are log-normal with mean ``mean_length``. Words
    come from a Zipf-distributed shared vocabulary, with about a quarter drawn
    from a class-specific vocabulary, so a bag-of-words model can learn the
    label. Labels follow :func:`long_tail_counts`, in a seeded random order.
    ``difficulty`` in ``[0, 1]`` thins the class words (down to a tenth) and
    draws up to half of them from the next class's vocabulary, so that
    neighbouring classes overlap and rare classes are hard to learn.

    Example:
        >>> import tempfile, json
        >>> p = make_text_corpus(tempfile.mkdtemp() + "/c.jsonl", num_docs=3, num_classes=2,
        ...                      mean_length=5, progress=False)
        >>> sorted(json.loads(line)["label"] for line in p.read_text().splitlines())
        [0, 0, 1]
    """
    num_docs = _check_int("num_docs", num_docs, 1)
    num_classes = _check_int("num_classes", num_classes, 1)
    seed = _check_int("seed", seed, 0)
    if isinstance(mean_length, bool) or not isinstance(mean_length, (int, float)) or not mean_length >= 1:
        raise ValueError(f"mean_length must be a number >= 1 (words per document), got {mean_length!r}")
    if isinstance(difficulty, bool) or not isinstance(difficulty, (int, float)) or not 0 <= difficulty <= 1:
        raise ValueError(f"difficulty must be a number in [0, 1], got {difficulty!r}")
    counts = long_tail_counts(num_docs, num_classes, imbalance)
    rng = np.random.default_rng(mix_seed(seed, _TEXT_SALT))
    taken: set[str] = set()
    common = _make_words(rng, 2000, taken)
    per_class = [_make_words(rng, 40, taken) for _ in range(num_classes)]
    cdf = np.cumsum(1.0 / np.arange(1, len(common) + 1))
    cdf /= cdf[-1]
    labels = rng.permutation(np.repeat(np.arange(num_classes), counts))
    sigma = 0.6
    mu = math.log(mean_length) - sigma**2 / 2  # so that the mean length is mean_length
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f, tqdm(
        total=num_docs, desc="make_text_corpus", unit="doc", disable=not progress
    ) as bar:
        for d, label in enumerate(labels.tolist()):
            drng = np.random.default_rng(mix_seed(seed, label, d))
            length = max(1, round(float(drng.lognormal(mu, sigma))))
            n_class = int(drng.binomial(length, 0.25 * (1 - 0.9 * difficulty)))
            idx = np.searchsorted(cdf, drng.random(length - n_class), side="right")
            words = [common[min(int(j), len(common) - 1)] for j in idx]
            vocab = per_class[label]
            picks = drng.integers(0, len(vocab), n_class)
            if difficulty > 0:  # some class words come from the next class's vocabulary
                other = per_class[(label + 1) % num_classes]
                borrowed = drng.random(n_class) < 0.5 * difficulty
                words += [(other if b else vocab)[int(j)] for j, b in zip(picks, borrowed)]
            else:
                words += [vocab[int(j)] for j in picks]
            order = drng.permutation(len(words))
            text = " ".join(words[int(j)] for j in order)
            f.write(json.dumps({"text": text, "label": label}) + "\n")
            bar.update(1)
    return path
