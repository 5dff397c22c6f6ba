from __future__ import annotations

import numpy as np
import pytest
import torch

from dataforge.datasets.map_style import MapDataset, from_sequence
from dataforge.datasets.packed import PackedTokenDataset, tokenize_dataset

pytest.importorskip("tokenizers")

from dataforge.transforms.text import Tokenize, train_tokenizer  # noqa: E402

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "mu"]


def _corpus(n: int = 60) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"text": " ".join(rng.choice(WORDS, size=int(rng.integers(0, 15)))), "label": i % 3}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tok() -> Tokenize:
    return Tokenize(train_tokenizer([r["text"] for r in _corpus()] * 3, vocab_size=60))


def test_same_ids_as_direct_encoding(tok):
    rows = _corpus()
    packed = tokenize_dataset(rows, tok, batch_size=7)
    assert isinstance(packed, MapDataset) and len(packed) == len(rows)
    for i, r in enumerate(rows):
        item = packed[i]
        assert item["input_ids"].dtype == torch.int64
        assert item["input_ids"].tolist() == tok(r["text"]) == tok.tokenizer.encode(r["text"]).ids
        assert item["label"] == r["label"]
    assert packed.lengths.tolist() == [len(tok(r["text"])) for r in rows]
    assert packed.labels.tolist() == [r["label"] for r in rows]
    assert packed.ids.dtype == np.int32 and packed.num_tokens == int(packed.lengths.sum())


def test_getitems_matches_getitem(tok):
    packed = tokenize_dataset(_corpus(), tok)
    idx = [5, 0, 59, 5, -1]
    batch = packed.__getitems__(idx)
    for i, item in zip(idx, batch):
        assert item["input_ids"].tolist() == packed[i]["input_ids"].tolist()
        assert item["label"] == packed[i]["label"]
    assert packed.__getitems__([]) == []


def test_text_dataset_columns_fast_path(tok):
    text_mod = pytest.importorskip("dataforge.datasets.text")
    rows = _corpus()
    ds = text_mod.TextDataset([r["text"] for r in rows], [r["label"] for r in rows])
    packed = ds.tokenize(tok, batch_size=16)
    direct = tokenize_dataset(rows, tok)
    assert np.array_equal(packed.ids, direct.ids) and np.array_equal(packed.offsets, direct.offsets)
    assert packed.labels.tolist() == direct.labels.tolist()


def test_unlabeled_max_length_and_mapdataset_source(tok):
    rows = [{"text": r["text"]} for r in _corpus()]
    packed = tokenize_dataset(from_sequence(rows), tok, max_length=4)
    assert packed.labels is None and "label" not in packed[0]
    assert packed.lengths.max() <= 4
    assert tokenize_dataset(_corpus(), tok, label_key=None).labels is None
    alt = tokenize_dataset([{"body": "alpha beta"}], tok, text_key="body")
    assert alt[0]["input_ids"].tolist() == tok("alpha beta")


def test_save_load_round_trip(tok, tmp_path):
    packed = tokenize_dataset(_corpus(), tok)
    path = packed.save(tmp_path / "packed")
    assert path.suffix == ".npz"
    back = PackedTokenDataset.load(path)
    assert np.array_equal(back.ids, packed.ids) and np.array_equal(back.offsets, packed.offsets)
    assert back.labels.tolist() == packed.labels.tolist() and back.pad_id == packed.pad_id == 0
    unlabeled = PackedTokenDataset([1, 2], [0, 1, 2]).save(tmp_path / "u.npz")
    assert PackedTokenDataset.load(unlabeled).labels is None


def test_works_in_a_dataloader_with_workers(tok):
    packed = tokenize_dataset(_corpus(24), tok)
    loader = torch.utils.data.DataLoader(
        packed, batch_size=5, num_workers=2, collate_fn=list, timeout=60
    )
    got = [x["input_ids"].tolist() for batch in loader for x in batch]
    assert got == [packed[i]["input_ids"].tolist() for i in range(len(packed))]


def test_empty_texts_and_empty_corpus(tok):
    packed = PackedTokenDataset(np.zeros(0, np.int32), [0, 0, 0])
    assert len(packed) == 2 and packed[1]["input_ids"].numel() == 0
    assert len(tokenize_dataset([], tok)) == 0


@pytest.mark.parametrize(
    ("make", "exc", "words"),
    [
        (lambda: PackedTokenDataset([1.5], [0, 1]), TypeError, "ids must be"),
        (lambda: PackedTokenDataset([1, 2], [0, 3]), ValueError, "end at len"),
        (lambda: PackedTokenDataset([1, 2], [0, 2, 1, 2]), ValueError, "non-decreasing"),
        (lambda: PackedTokenDataset([1], [0, 1], labels=[0, 1]), ValueError, "labels"),
        (lambda: PackedTokenDataset([-1], [0, 1]), ValueError, "non-negative"),
        (lambda: PackedTokenDataset([1], [0, 1], pad_id=-1), ValueError, "pad_id"),
    ],
)
def test_bad_arrays(make, exc, words):
    with pytest.raises(exc, match=words):
        make()


def test_bad_inputs(tok, tmp_path):
    with pytest.raises(TypeError, match="'text' entry"):
        tokenize_dataset(["plain string item"], tok)
    with pytest.raises(KeyError, match="label_key=None"):
        tokenize_dataset([{"text": "a", "label": 1}, {"text": "b"}], tok)
    with pytest.raises(ValueError, match="batch_size"):
        tokenize_dataset([], tok, batch_size=0)
    with pytest.raises(TypeError, match="map-style"):
        tokenize_dataset("text", tok)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        PackedTokenDataset.load(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(2))
    with pytest.raises(ValueError, match="missing arrays"):
        PackedTokenDataset.load(bad)

