from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

import dataforge
from dataforge.datasets.storage import StringStorage
from dataforge.synthetic import make_text_corpus


def _jsonl(tmp_path: Path, rows: list, name: str = "t.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def _csv(tmp_path: Path, rows: list[list[str]], name: str = "t.csv") -> Path:
    p = tmp_path / name
    with p.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return p


def test_from_jsonl_int_labels(tmp_path: Path) -> None:
    p = _jsonl(tmp_path, [{"text": "héllo", "label": 2}, {"text": "", "label": 0, "extra": 1}])
    ds = dataforge.TextDataset.from_jsonl(p)
    assert len(ds) == 2 and ds[0] == {"text": "héllo", "label": 2} and ds[-1] == {"text": "", "label": 0}
    assert ds.labels.tolist() == [2, 0] and ds.labels.dtype == np.int64 and ds.classes is None
    assert isinstance(ds.texts, StringStorage)
    assert ds.__getitems__([1, 0]) == [ds[1], ds[0]]


def test_from_jsonl_string_labels_and_keys(tmp_path: Path) -> None:
    p = _jsonl(tmp_path, [{"body": "a", "y": "spam"}, {"body": "b", "y": "ham"}, {"body": "c", "y": "spam"}])
    ds = dataforge.TextDataset.from_jsonl(p, text_key="body", label_key="y")
    assert ds.classes == ["ham", "spam"] and ds.labels.tolist() == [1, 0, 1]
    unl = dataforge.TextDataset.from_jsonl(p, text_key="body", label_key=None)
    assert unl[1] == {"text": "b"} and unl.labels is None and unl.classes is None


def test_from_csv(tmp_path: Path) -> None:
    p = _csv(tmp_path, [["id", "review", "sentiment"], ["1", "great, really", "pos"], ["2", 'line\n"two"', "neg"]])
    ds = dataforge.TextDataset.from_csv(p, text_key="review", label_key="sentiment")
    assert ds[1] == {"text": 'line\n"two"', "label": 0} and ds.classes == ["neg", "pos"]
    ints = dataforge.TextDataset.from_csv(p, text_key="review", label_key="id")
    assert ints.labels.tolist() == [1, 2] and ints.classes is None
    tsv = tmp_path / "t.tsv"
    tsv.write_text("text\tlabel\nx\t1\n", encoding="utf-8")
    assert dataforge.TextDataset.from_csv(tsv, delimiter="\t")[0] == {"text": "x", "label": 1}
    unl = dataforge.TextDataset.from_csv(p, text_key="review", label_key=None)
    assert unl[0] == {"text": "great, really"}


def test_synthetic_corpus_in_loader(tmp_path: Path) -> None:
    path = make_text_corpus(tmp_path / "c.jsonl", num_docs=50, num_classes=3, mean_length=8, progress=False)
    ds = dataforge.TextDataset.from_jsonl(path)
    train, val = ds.split([0.8, 0.2], stratify=True, seed=0)
    assert set(val.labels.tolist()) == {0, 1, 2}
    batches = list(DataLoader(train, batch_size=16, num_workers=2))
    assert sum(len(b["text"]) for b in batches) == len(train)
    assert [t for b in batches for t in b["text"]] == [train[i]["text"] for i in range(len(train))]
    back = pickle.loads(pickle.dumps(ds))
    assert back[7] == ds[7] and back.labels.tolist() == ds.labels.tolist()


def test_constructor() -> None:
    ds = dataforge.TextDataset(["a", "b"], [1, 0], classes=["neg", "pos"])
    assert ds[0] == {"text": "a", "label": 1} and "TextDataset(len=2" in repr(ds)
    assert dataforge.TextDataset(StringStorage(["z"]))[0] == {"text": "z"}
    with pytest.raises(ValueError, match=r"labels must be ids in \[0, 2\) to index classes=\['neg', 'pos'\], got values in \[0, 5\]"):
        dataforge.TextDataset(["a", "b"], [5, 0], classes=["neg", "pos"])
    with pytest.raises(ValueError, match="classes were given without labels"):
        dataforge.TextDataset(["a"], classes=["x"])
    with pytest.raises(TypeError, match="classes must be a list of str"):
        dataforge.TextDataset(["a"], [0], classes="x")
    with pytest.raises(TypeError, match="strings must contain only str, got int 3 at position 1"):
        dataforge.TextDataset(["a", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"labels must be a 1-D sequence with one int per item \(1\)"):
        dataforge.TextDataset(["a"], [0, 1])


def test_bad_input(tmp_path: Path) -> None:
    T = dataforge.TextDataset
    p = _jsonl(tmp_path, [{"text": "a", "label": 0}, {"txt": "b", "label": 1}])
    with pytest.raises(ValueError, match=r"unknown key 'text' at line 2; keys present: \['txt', 'label'\]"):
        T.from_jsonl(p)
    with pytest.raises(ValueError, match=r"unknown key 'y' at line 1; keys present: \['text', 'label'\]"):
        T.from_jsonl(p, label_key="y")
    with pytest.raises(ValueError, match="key 'label' has no value at line 1"):
        T.from_jsonl(_jsonl(tmp_path, [{"text": "a", "label": None}], "n.jsonl"))
    with pytest.raises(TypeError, match="'text' at line 1 must be a string, got int"):
        T.from_jsonl(_jsonl(tmp_path, [{"text": 5, "label": 0}], "i.jsonl"))
    with pytest.raises(ValueError, match="label 'label' must be class ids or names, got the number 0.5"):
        T.from_jsonl(_jsonl(tmp_path, [{"text": "a", "label": 0.5}], "f.jsonl"))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "a", "label": 0}\n{"text": \n', encoding="utf-8")
    with pytest.raises(ValueError, match="invalid JSON at line 2"):
        T.from_jsonl(bad_json)
    with pytest.raises(ValueError, match="line 1 holds a list, expected a JSON object"):
        T.from_jsonl(_jsonl(tmp_path, [[1, 2]], "l.jsonl"))
    with pytest.raises(ValueError, match="has no records"):
        T.from_jsonl(_jsonl(tmp_path, [], "e.jsonl"))
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=f"path does not exist or is not a file: '{missing}'"):
        T.from_jsonl(missing)
    c = _csv(tmp_path, [["review", "label"], ["x", "1"]])
    with pytest.raises(ValueError, match=r"unknown key 'text' at line 1 \(the header\); keys present: \['review', 'label'\]"):
        T.from_csv(c)
    with pytest.raises(ValueError, match="is empty: expected a header row"):
        T.from_csv(_csv(tmp_path, [], "empty.csv"))
    with pytest.raises(ValueError, match="missing target value at line 3"):
        T.from_csv(_csv(tmp_path, [["text", "label"], ["a", "1"], ["b", ""]], "m.csv"))
    with pytest.raises(TypeError, match="text_key must be a str, got 3"):
        T.from_jsonl(p, text_key=3)  # type: ignore[arg-type]


def test_tokenize_delegates(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    packed = pytest.importorskip("dataforge.datasets.packed")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "again": 3}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ds = dataforge.TextDataset(["hello world", "world again hello", "zzz"], [0, 1, 0])
    got = ds.tokenize(tok, max_length=2, batch_size=2)
    expected = packed.tokenize_dataset(ds, tok, max_length=2, batch_size=2)
    assert type(got) is type(expected) and len(got) == len(expected) == 3
    for i in range(3):
        assert repr(got[i]) == repr(expected[i])


def test_from_file_reads_csv_gz_and_parquet_through_the_registry(tmp_path: Path) -> None:
    import gzip

    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        f.write("text,label\ngood,pos\nbad,neg\n")
    ds = dataforge.TextDataset.from_file(tmp_path / "t.csv.gz")
    assert [ds[i] for i in range(2)] == [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
    (tmp_path / "r.csv").write_text("text,label\ngood,pos\nbad\n")
    with pytest.raises(ValueError, match="line 3 has 1 fields, the header has 2"):
        dataforge.TextDataset.from_csv(tmp_path / "r.csv")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"body": ["x", "y", "z"], "y": [2, 0, 1]}), tmp_path / "t.parquet")
    ds = dataforge.TextDataset.from_file(tmp_path / "t.parquet", text_key="body", label_key="y")
    assert [ds[i]["text"] for i in range(3)] == ["x", "y", "z"] and ds.labels.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match=r"unknown key 'label' at line 1 \(the header\); keys present: \['body', 'y'\]"):
        dataforge.TextDataset.from_file(tmp_path / "t.parquet", text_key="body")
