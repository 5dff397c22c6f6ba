from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dataforge

pytest.importorskip("dataforge.datasets.image_folder")
pytest.importorskip("dataforge.samplers.class_balanced")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("imgs")
    for c, n in (("a", 8), ("b", 4)):
        (root / c).mkdir()
        for i in range(n):
            Image.new("RGB", (12, 10), (i * 20, 30, 90)).save(root / c / f"{i}.png")
    return str(root)


@pytest.mark.parametrize("balance", ["oversample", None])
def test_image_loaders_deliver_normalized_float_batches(folder: str, balance) -> None:
    train, val = dataforge.build_image_loaders(
        folder, batch_size=4, size=8, num_workers=0, device="cpu", balance=balance
    )
    batch = next(iter(train))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["image"].min() < 0  # normalized on the "device"
    vb = list(val)
    assert sum(len(b["label"]) for b in vb) == len(val.dataset) and len(val.dataset) in (2, 3)
    state = train.state_dict()
    assert json.loads(json.dumps(state)) == state


def test_image_loaders_from_a_pair_and_overrides(folder: str) -> None:
    ds = dataforge.ImageFolder(folder)
    tr, va = ds.split([0.5, 0.5], seed=0, stratify=True)
    train, val = dataforge.build_image_loaders(
        (tr, va), batch_size=2, num_workers=0, train_transform=None, val_transform=None,
        batch_transforms=None, balance=None,
    )
    assert next(iter(train))["image"].dtype == torch.uint8
    with pytest.raises(ValueError, match="val_fraction"):
        dataforge.build_image_loaders(folder, val_fraction=1.5, num_workers=0)


def test_text_loaders(tmp_path) -> None:
    pytest.importorskip("tokenizers")
    from dataforge.transforms.text import train_tokenizer

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    rows = [
        {"text": " ".join(rng.choice(words, size=int(rng.integers(2, 20)))), "label": int(i % 3 == 0)}
        for i in range(60)
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    tok = train_tokenizer([r["text"] for r in rows], vocab_size=40)
    train, val = dataforge.build_text_loaders(str(path), tok, max_tokens=128, batch_size=8, device="cpu")
    batches = list(train)
    assert all(b["input_ids"].shape[1] % 8 == 0 for b in batches)
    assert all(b["attention_mask"].shape == b["input_ids"].shape for b in batches)
    assert sum(len(b["label"]) for b in val) == len(val.dataset)


@pytest.mark.parametrize("name", ["c.parquet", "c.txt"])
def test_text_loaders_read_any_registered_format_and_jsonl_otherwise(tmp_path, name: str) -> None:
    """The file goes through the reader registry by extension (Parquet here); an
    extension no reader claims is read as JSON lines."""
    pytest.importorskip("tokenizers")
    from dataforge.transforms.text import train_tokenizer

    rows = [{"text": f"alpha beta {'gamma ' * (i % 5)}".strip(), "label": i % 2} for i in range(40)]
    path = tmp_path / name
    if name.endswith(".parquet"):
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows))
    tok = train_tokenizer([r["text"] for r in rows], vocab_size=30)
    train, val = dataforge.build_text_loaders(str(path), tok, max_tokens=64, batch_size=4, device="cpu")
    assert len(train.dataset) + len(val.dataset) == 40
    labels = sorted(int(x) for b in [*train, *val] for x in b["label"])
    assert labels == sorted(r["label"] for r in rows)
