from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataforge.synthetic import long_tail_counts, make_image_folder, make_text_corpus


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("total", "classes", "imbalance"), [(100, 4, 10.0), (7, 7, 100.0), (1000, 10, 1.0), (5, 1, 3.0), (3, 2, 50)]
)
def test_long_tail_counts_exact_total_and_profile(total: int, classes: int, imbalance: float) -> None:
    counts = long_tail_counts(total, classes, imbalance)
    assert sum(counts) == total and len(counts) == classes
    assert min(counts) >= 1
    assert counts == sorted(counts, reverse=True)


def test_long_tail_counts_ratio() -> None:
    counts = long_tail_counts(10_000, 10, 10.0)
    assert 9.0 <= counts[0] / counts[-1] <= 10.5
    assert long_tail_counts(100, 4, 1.0) == [25, 25, 25, 25]


def test_long_tail_counts_bad_input() -> None:
    with pytest.raises(ValueError, match="total must be >= num_classes .* total=2 and num_classes=3"):
        long_tail_counts(2, 3, 2.0)
    with pytest.raises(ValueError, match="imbalance must be a finite number >= 1.*got 0.5"):
        long_tail_counts(10, 2, 0.5)
    with pytest.raises(ValueError, match="imbalance must be a finite number >= 1.*got inf"):
        long_tail_counts(10, 2, math.inf)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1, got 0"):
        long_tail_counts(10, 0, 2.0)
    with pytest.raises(ValueError, match="total must be an int >= 1, got 2.5"):
        long_tail_counts(2.5, 1, 2.0)  # type: ignore[arg-type]


def test_make_image_folder_layout_sizes_and_determinism(tmp_path: Path) -> None:
    root = make_image_folder(
        tmp_path / "a", num_images=24, num_classes=3, imbalance=4.0, sizes=(20, 40), seed=1, progress=False
    )
    assert root == tmp_path / "a"
    per_class = {d.name: len(list(d.glob("*.jpg"))) for d in sorted(root.iterdir())}
    assert per_class == dict(zip(["class_0", "class_1", "class_2"], long_tail_counts(24, 3, 4.0)))
    for p in root.rglob("*.jpg"):
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert 20 <= im.width <= 40 and 20 <= im.height <= 40
    same = make_image_folder(
        tmp_path / "b", num_images=24, num_classes=3, imbalance=4.0, sizes=(20, 40), seed=1, progress=False
    )
    assert _digest(root) == _digest(same)
    other = make_image_folder(
        tmp_path / "c", num_images=24, num_classes=3, imbalance=4.0, sizes=(20, 40), seed=2, progress=False
    )
    assert _digest(root) != _digest(other)


def test_make_image_folder_default_sizes_are_imagenet_like(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, num_images=3, num_classes=1, progress=False)
    for p in root.rglob("*.jpg"):
        with Image.open(p) as im:
            assert 300 <= im.width <= 500 and 300 <= im.height <= 500


def test_make_image_folder_classes_are_distinguishable(tmp_path: Path) -> None:
    """A nearest-class-mean on the median (background) color separates the classes (learnable content)."""
    root = make_image_folder(tmp_path, num_images=40, num_classes=4, imbalance=1.0, sizes=(24, 32), progress=False)
    feats, labels = [], []
    for c, d in enumerate(sorted(root.iterdir())):
        for p in sorted(d.glob("*.jpg")):
            feats.append(np.median(np.asarray(Image.open(p), dtype=np.float64), axis=(0, 1)))
            labels.append(c)
    x, y = np.array(feats), np.array(labels)
    means = np.stack([x[y == c].mean(0) for c in range(4)])
    pred = np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == y).mean() >= 0.9


def test_make_image_folder_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_image_folder(tmp_path, num_images=2, num_classes=1, sizes=(8, 8), progress=True)
    assert "make_image_folder" in capsys.readouterr().err


def test_make_image_folder_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sizes must be \(min, max\) ints with 8 <= min <= max, got \(50, 10\)"):
        make_image_folder(tmp_path, num_images=2, sizes=(50, 10), progress=False)
    with pytest.raises(ValueError, match="quality must be an int in \\[1, 100\\], got 101"):
        make_image_folder(tmp_path, num_images=2, quality=101, progress=False)
    with pytest.raises(ValueError, match="num_images must be an int >= 1, got 0"):
        make_image_folder(tmp_path, num_images=0, progress=False)
    with pytest.raises(ValueError, match="total must be >= num_classes"):
        make_image_folder(tmp_path, num_images=2, num_classes=3, progress=False)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_make_text_corpus(tmp_path: Path) -> None:
    path = make_text_corpus(tmp_path / "sub" / "c.jsonl", num_docs=400, num_classes=4, imbalance=8.0,
                            seed=3, mean_length=60, progress=False)
    docs = _read(path)
    assert len(docs) == 400 and all(set(d) == {"text", "label"} for d in docs)
    counts = Counter(d["label"] for d in docs)
    assert [counts[c] for c in range(4)] == long_tail_counts(400, 4, 8.0)
    assert [d["label"] for d in docs[:40]] != sorted(d["label"] for d in docs[:40])  # shuffled
    lengths = np.array([len(d["text"].split()) for d in docs])
    assert lengths.min() >= 1 and 50 <= lengths.mean() <= 70
    log_len = np.log(lengths)
    assert 0.4 <= log_len.std() <= 0.8  # log-normal spread (sigma 0.6)
    assert path.read_bytes() == make_text_corpus(tmp_path / "again.jsonl", num_docs=400, num_classes=4,
                                                 imbalance=8.0, seed=3, mean_length=60,
                                                 progress=False).read_bytes()
    other = make_text_corpus(tmp_path / "o.jsonl", num_docs=400, num_classes=4, imbalance=8.0, seed=4,
                             mean_length=60, progress=False)
    assert other.read_bytes() != path.read_bytes()


def test_make_text_corpus_vocabulary_is_class_dependent(tmp_path: Path) -> None:
    docs = _read(make_text_corpus(tmp_path / "c.jsonl", num_docs=200, num_classes=3, imbalance=1.0,
                                  mean_length=40, progress=False))
    vocab = {c: Counter(w for d in docs if d["label"] == c for w in d["text"].split()) for c in range(3)}
    only = {c: {w for w in vocab[c] if all(w not in vocab[o] for o in vocab if o != c)} for c in vocab}
    assert all(len(only[c]) >= 20 for c in vocab)  # each class owns words the others never use
    # a trivial classifier (count of class-owned words) is nearly perfect
    correct = sum(
        max(range(3), key=lambda c: sum(w in only[c] for w in d["text"].split())) == d["label"] for d in docs
    )
    assert correct / len(docs) >= 0.95


def test_make_text_corpus_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mean_length must be a number >= 1.*got 0"):
        make_text_corpus(tmp_path / "c.jsonl", num_docs=5, mean_length=0, progress=False)
    with pytest.raises(ValueError, match="num_docs must be an int >= 1, got -1"):
        make_text_corpus(tmp_path / "c.jsonl", num_docs=-1, progress=False)
    with pytest.raises(ValueError, match="imbalance must be"):
        make_text_corpus(tmp_path / "c.jsonl", num_docs=5, num_classes=2, imbalance=0, progress=False)


def test_difficulty_is_validated_and_deterministic(tmp_path) -> None:
    import pytest

    from dataforge.synthetic import make_image_folder

    with pytest.raises(ValueError, match="difficulty"):
        make_image_folder(tmp_path / "x", num_images=2, num_classes=1, sizes=(16, 16), progress=False, difficulty=1.5)
    kw = dict(num_images=6, num_classes=2, imbalance=1, sizes=(16, 20), progress=False)
    a = make_image_folder(tmp_path / "a", difficulty=0.7, **kw)
    b = make_image_folder(tmp_path / "b", difficulty=0.7, **kw)
    c = make_image_folder(tmp_path / "c", difficulty=0.0, **kw)
    files = sorted(p.relative_to(a) for p in a.glob("*/*.jpg"))
    assert [(a / f).read_bytes() for f in files] == [(b / f).read_bytes() for f in files]
    assert [(a / f).read_bytes() for f in files] != [(c / f).read_bytes() for f in files]
