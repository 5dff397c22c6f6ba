"""Benchmark data: demo data generated once into a cache folder, and checks of ``--data``.

Demo data comes from :mod:`dataforge.synthetic` (deterministic from a seed) and
is written once into ``$DATAFORGE_CACHE`` (default ``~/.cache/dataforge/demo``),
one folder / file per size, so later runs start at once. Generation writes into
a temporary name first and renames at the end: an interrupted run never leaves a
half-written data set that a later run would trust.

A user's ``--data`` is checked before any benchmark starts, and every problem is
a :class:`~dataforge.bench.common.BenchError` whose one-line message says what was
expected (the CLI prints it and exits with code 2).

Example:
    >>> import tempfile
    >>> root = demo_image_folder(8, cache=tempfile.mkdtemp(), progress=False)
    >>> len(check_image_folder(root))
    8
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dataforge.bench.common import BenchError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
DEMO_CLASSES = 10
DEMO_IMBALANCE = 10.0  # largest class / smallest class, as in a typical long-tailed set
_LAYOUT = "ROOT/<class>/<image>.jpg"


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The demo-data folder: ``cache``, else ``$DATAFORGE_CACHE``, else ``~/.cache/dataforge/demo``."""
    if cache is not None:
        return Path(cache)
    env = os.environ.get("DATAFORGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dataforge" / "demo"


def _fresh_tmp(final: Path) -> Path:
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def _publish(tmp: Path, final: Path) -> None:
    try:
        os.replace(tmp, final)
    except OSError:  # another process published it first: keep theirs
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if not final.exists():
            raise


def demo_image_folder(num_images: int, *, cache: str | os.PathLike[str] | None = None,
                      seed: int = 0, progress: bool = True) -> Path:
    """The demo image folder with ``num_images`` JPEGs, generated on first use."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise BenchError(f"num_images must be a positive int, got {num_images!r}")
    from dataforge.synthetic import make_image_folder

    final = cache_dir(cache) / f"images-{num_images}-seed{seed}"
    if final.is_dir():
        return final
    tmp = _fresh_tmp(final)
    classes = min(DEMO_CLASSES, num_images)
    make_image_folder(tmp, num_images, classes, DEMO_IMBALANCE if classes > 1 else 1.0,
                      seed=seed, progress=progress)
    _publish(tmp, final)
    return final


# NOTE [photo set]: camera-photo sizes for `bench image --images photos`: each image
# has 1-12 megapixels (uniform), a common camera aspect (4:3, 3:2, 16:9, 1:1) in either
# orientation, JPEG quality 90, chroma subsampling cycling 4:2:0 (half), 4:2:2 and
# 4:4:4, and every fifth file progressive. Content is a smooth colour field with
# mild noise (a tiled noise patch, so generation stays fast), which compresses about
# as a photo does (1.5-2.5 bits per pixel). 200 files, about 275 MB, under a minute
# to write; cached as the demo set is.
PHOTO_IMAGES = 200
PHOTO_CLASSES = 8
PHOTO_MEGAPIXELS = (1.0, 12.0)
PHOTO_ASPECTS = ((4, 3), (3, 2), (16, 9), (1, 1))
PHOTO_SUBSAMPLING = ("4:2:0", "4:2:2", "4:2:0", "4:4:4")  # PIL's names; 4:2:0 half the files
_NOISE_TILE = 256


def photo_size(rng: np.random.Generator) -> tuple[int, int]:
    """``(width, height)`` of one photo: 1-12 MP, a camera aspect, either orientation."""
    mp = rng.uniform(*PHOTO_MEGAPIXELS) * 1e6
    a, b = PHOTO_ASPECTS[int(rng.integers(len(PHOTO_ASPECTS)))]
    if rng.random() < 0.25:
        a, b = b, a  # portrait
    h = int(round((mp * b / a) ** 0.5))
    return max(16, int(round(h * a / b))), max(16, h)


def _photo(rng: np.random.Generator, w: int, h: int, noise: np.ndarray) -> Any:
    """A smooth colour field (a small random grid upsampled bicubically) plus tiled noise."""
    from PIL import Image

    grid = rng.integers(0, 256, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3))
    field = np.asarray(Image.fromarray(grid.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC),
                       dtype=np.int16)
    reps = (h // _NOISE_TILE + 1, w // _NOISE_TILE + 1, 1)
    field += np.tile(noise, reps)[:h, :w]
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))


def photo_image_folder(num_images: int = PHOTO_IMAGES, *, cache: str | os.PathLike[str] | None = None,
                       seed: int = 0, progress: bool = True) -> Path:
    """A folder of camera-size JPEGs (NOTE [photo set]), generated on first use and cached.

    Example:
        >>> import tempfile
        >>> root = photo_image_folder(2, cache=tempfile.mkdtemp(), progress=False)  # doctest: +SKIP
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise BenchError(f"num_images must be a positive int, got {num_images!r}")
    from tqdm import tqdm

    from dataforge._rng import mix_seed

    final = cache_dir(cache) / f"photos-{num_images}-seed{seed}"
    if final.is_dir():
        return final
    tmp = _fresh_tmp(final)
    classes = min(PHOTO_CLASSES, num_images)
    noise = np.random.default_rng(seed).normal(0, 6, (_NOISE_TILE, _NOISE_TILE, 3)).astype(np.int16)
    for c in range(classes):
        (tmp / f"class_{c}").mkdir(parents=True)
    for i in tqdm(range(num_images), desc="photo_image_folder", unit="img", disable=not progress):
        rng = np.random.default_rng(mix_seed(seed, i))
        w, h = photo_size(rng)
        _photo(rng, w, h, noise).save(
            tmp / f"class_{i % classes}" / f"photo_{i:05d}.jpg", "JPEG", quality=90,
            subsampling=PHOTO_SUBSAMPLING[i % len(PHOTO_SUBSAMPLING)], progressive=i % 5 == 2)
    _publish(tmp, final)
    return final


def demo_text_corpus(num_docs: int, *, cache: str | os.PathLike[str] | None = None,
                     seed: int = 0, progress: bool = True) -> Path:
    """The demo JSONL corpus (``{"text": ..., "label": ...}`` lines), generated on first use."""
    if isinstance(num_docs, bool) or not isinstance(num_docs, int) or num_docs < 1:
        raise BenchError(f"num_docs must be a positive int, got {num_docs!r}")
    from dataforge.synthetic import make_text_corpus

    final = cache_dir(cache) / f"text-{num_docs}-seed{seed}.jsonl"
    if final.is_file():
        return final
    tmp = _fresh_tmp(final)
    classes = min(DEMO_CLASSES, num_docs)
    make_text_corpus(tmp, num_docs, classes, DEMO_IMBALANCE if classes > 1 else 1.0,
                     seed=seed, progress=progress)
    _publish(tmp, final)
    return final


def check_image_folder(path: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """Check an ImageFolder layout and return its ``(path, class index)`` pairs, sorted.

    Raises:
        BenchError: the path is missing, not a folder, has no class folders, or
            its class folders hold no image files.
    """
    root = Path(path)
    if not root.exists():
        raise BenchError(f"--data {str(root)!r} does not exist; expected an image folder ({_LAYOUT})")
    if not root.is_dir():
        raise BenchError(f"--data {str(root)!r} is a file; expected an image folder ({_LAYOUT})")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise BenchError(f"--data {str(root)!r} has no class folders; expected {_LAYOUT}")
    items: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, files in os.walk(root / name, followlinks=True):
            dirnames.sort()
            items.extend((os.path.join(dirpath, f), label) for f in sorted(files)
                         if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    if not items:
        raise BenchError(
            f"--data {str(root)!r} has {len(classes)} class folder(s) but no image files "
            f"({', '.join(IMAGE_EXTENSIONS)}); expected {_LAYOUT}")
    return items


def check_jsonl(path: str | os.PathLike[str], text_key: str = "text",
                label_key: str | None = "label") -> int:
    """Check a JSONL corpus (one JSON object per line with ``text_key``) and count its records.

    Raises:
        BenchError: the file is missing, empty, has a line that is not a JSON
            object, or a record without ``text_key`` (or ``label_key``).
    """
    p = Path(path)
    if not p.is_file():
        what = "a folder" if p.is_dir() else "missing"
        raise BenchError(f"--data {str(p)!r} is {what}; expected a JSONL file with a {text_key!r} key per line")
    n = 0
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchError(f"--data {str(p)!r} line {lineno} is not JSON ({exc.msg}); "
                                 "expected one JSON object per line") from None
            if not isinstance(rec, dict):
                raise BenchError(f"--data {str(p)!r} line {lineno} is a {type(rec).__name__}; "
                                 "expected one JSON object per line")
            if not isinstance(rec.get(text_key), str):
                raise BenchError(f"--data {str(p)!r} line {lineno} has no string {text_key!r} key "
                                 f"(keys: {sorted(rec)[:8]}); pass --text-key to name the text field")
            if label_key is not None and label_key not in rec:
                raise BenchError(f"--data {str(p)!r} line {lineno} has no {label_key!r} key "
                                 f"(keys: {sorted(rec)[:8]}); pass --label-key to name the label field")
            n += 1
    if n == 0:
        raise BenchError(f"--data {str(p)!r} is empty; expected a JSONL file with a {text_key!r} key per line")
    return n
