from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import dataforge

TITANIC = """PassengerId,Survived,Pclass,Name,Sex,Age,Fare
1,0,3,"Braund, Mr. Owen",male,22,7.25
2,1,1,"Cumings, Mrs. John",female,38,71.2833
3,1,3,"Heikkinen, Miss. Laina",female,26,7.925

4,1,1,"Futrelle, Mrs. Jacques",female,35,53.1
5,0,3,"Allen, Mr. William",male,,8.05
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture
def titanic(tmp_path: Path) -> Path:
    return _write(tmp_path, "train.csv", TITANIC)


def test_from_csv_train(titanic: Path) -> None:
    ds = dataforge.TableDataset.from_csv(
        titanic, target="Survived", features=["Pclass", "Fare", "Age"], fill_missing=-1.0
    )
    assert len(ds) == 5 and ds.train and ds.target == "Survived"
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.tolist() == pytest.approx([1, 71.2833, 38])
    assert y == 1 and isinstance(y, int)
    assert ds[-1][0].tolist() == pytest.approx([3, 8.05, -1])
    assert ds.labels.tolist() == [0, 1, 1, 1, 0] and ds.labels.dtype == np.int64
    assert ds.classes is None and ds.feature_names == ["Pclass", "Fare", "Age"]
    batch = ds.__getitems__([4, 0])
    assert [b[1] for b in batch] == [0, 0] and batch[0][0].tolist() == pytest.approx([3, 8.05, -1])
    xb, yb = next(iter(DataLoader(ds, batch_size=5)))
    assert xb.shape == (5, 3) and yb.tolist() == [0, 1, 1, 1, 0]


def test_from_csv_inference_without_target(tmp_path: Path, titanic: Path) -> None:
    test_csv = _write(tmp_path, "test.csv", "PassengerId,Pclass,Fare\n892,3,7.83\n893,3,7.0\n")
    ds = dataforge.TableDataset.from_csv(test_csv, target="Survived", train=False)
    assert not ds.train and ds.labels is None and ds.feature_names == ["PassengerId", "Pclass", "Fare"]
    assert isinstance(ds[0], torch.Tensor) and ds[0].tolist() == pytest.approx([892, 3, 7.83])
    assert [r.tolist() for r in ds.__getitems__([1])] == [pytest.approx([893, 3, 7.0])]
    # train=False on a file that has the target: the target column is dropped
    no_y = dataforge.TableDataset.from_csv(titanic, target="Survived", features=["Fare"], train=False)
    assert no_y[0].tolist() == pytest.approx([7.25])
    assert dataforge.TableDataset.from_csv(test_csv, train=False).feature_names == ["PassengerId", "Pclass", "Fare"]


def test_string_target_and_dtype(tmp_path: Path) -> None:
    p = _write(tmp_path, "iris.csv", "a;b;species\n1;2;virginica\n3;4;setosa\n5;6;virginica\n")
    ds = dataforge.TableDataset.from_csv(p, target="species", delimiter=";", dtype=torch.float64)
    assert ds.classes == ["setosa", "virginica"] and ds.labels.tolist() == [1, 0, 1]
    assert ds[0][0].dtype == torch.float64 and ds[1][1] == 0


def test_float_target_is_regression(tmp_path: Path) -> None:
    p = _write(tmp_path, "r.csv", "x,y\n1,0.5\n2,1.0\n3,2.25\n")
    ds = dataforge.TableDataset.from_csv(p, target="y")
    assert ds.labels is None and ds.classes is None
    assert ds[2][1] == 2.25 and isinstance(ds[0][1], float)
    assert ds.targets.dtype == np.float32
    ints = dataforge.TableDataset.from_csv(_write(tmp_path, "i.csv", "x,y\n1,1.0\n2,0.0\n"), target="y")
    assert ints.labels.tolist() == [1, 0]  # integral floats are class ids


def test_from_jsonl(tmp_path: Path) -> None:
    rows = [{"a": 1, "b": 2.5, "label": "x"}, {"a": 3, "b": None, "label": "y"}, {"b": 1, "a": 0, "label": "x"}]
    p = _write(tmp_path, "t.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = dataforge.TableDataset.from_jsonl(p, target="label", fill_missing=0.0)
    assert ds.feature_names == ["a", "b"] and ds.classes == ["x", "y"]
    assert [ds[i][0].tolist() for i in range(3)] == [[1, 2.5], [3, 0], [0, 1]]
    assert ds.labels.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match=r"unknown key 'label' at line 2; keys present: \['a'\]"):
        dataforge.TableDataset.from_jsonl(_write(tmp_path, "m.jsonl", '{"a": 1, "label": 0}\n{"a": 2}\n'), target="label")
    with pytest.raises(ValueError, match="no records"):
        dataforge.TableDataset.from_jsonl(_write(tmp_path, "e.jsonl", "\n"), target="y")


def test_constructor_and_ops(tmp_path: Path) -> None:
    ds = dataforge.TableDataset(np.arange(12).reshape(6, 2), [0, 1, 0, 1, 0, 1], feature_names=["p", "q"])
    assert ds[3][1] == 1 and ds[3][0].tolist() == [6.0, 7.0]
    a, b = ds.split([0.5, 0.5], stratify=True, seed=1)
    assert sorted(a.labels.tolist()) == [0, 0, 1, 1] and sorted(b.labels.tolist()) == [0, 1]
    assert [int(a[i][0][0]) // 2 % 2 for i in range(len(a))] == a.labels.tolist()
    back = pickle.loads(pickle.dumps(ds))
    assert back[5][0].tolist() == [10.0, 11.0] and "TableDataset(len=6" in repr(back)
    unl = dataforge.TableDataset(torch.ones(2, 3))
    assert unl[0].tolist() == [1, 1, 1] and unl.labels is None
    assert unl.__getitems__([]) == []


def test_bad_input(tmp_path: Path, titanic: Path) -> None:
    T = dataforge.TableDataset
    with pytest.raises(ValueError, match=r"target 'survived' is not a column of .*train.csv; valid columns: \['PassengerId', 'Survived'"):
        T.from_csv(titanic, target="survived")
    with pytest.raises(ValueError, match=r"features \['Cabin'\] are not columns of .*; valid columns: \['PassengerId'"):
        T.from_csv(titanic, target="Survived", features=["Age", "Cabin"])
    with pytest.raises(ValueError, match="feature column 'Name' has a non-numeric value 'Braund, Mr. Owen' at line 2"):
        T.from_csv(titanic, target="Survived")
    with pytest.raises(ValueError, match=r"feature column 'Age' has a non-numeric value '' at line 7 \(a missing value: pass fill_missing"):
        T.from_csv(titanic, target="Survived", features=["Age"])
    with pytest.raises(ValueError, match="target is required when train=True"):
        T.from_csv(titanic)
    with pytest.raises(ValueError, match="features must not contain the target column 'Survived'"):
        T.from_csv(titanic, target="Survived", features=["Survived"])
    with pytest.raises(TypeError, match="features must be a list of column names, got the string 'Age'"):
        T.from_csv(titanic, target="Survived", features="Age")
    with pytest.raises(TypeError, match="train must be a bool"):
        T.from_csv(titanic, target="Survived", features=["Age"], train="no")  # type: ignore[arg-type]
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=f"path does not exist or is not a file: '{missing}'"):
        T.from_csv(missing, target="y")
    with pytest.raises(ValueError, match="is empty: expected a header row"):
        T.from_csv(_write(tmp_path, "empty.csv", ""), target="y")
    with pytest.raises(ValueError, match="has a header but no data rows"):
        T.from_csv(_write(tmp_path, "h.csv", "x,y\n"), target="y")
    with pytest.raises(ValueError, match="line 3 has 1 fields, the header has 2"):
        T.from_csv(_write(tmp_path, "r.csv", "x,y\n1,2\n3\n"), target="y")
    with pytest.raises(ValueError, match="missing target value at line 3"):
        T.from_csv(_write(tmp_path, "m.csv", "x,y\n1,2\n3,\n"), target="y")
    with pytest.raises(ValueError, match="features is empty"):
        T.from_csv(_write(tmp_path, "o.csv", "y\n1\n"), target="y")
    with pytest.raises(ValueError, match=r"features must be 2-D \(rows, columns\), got shape \(3,\)"):
        T([1, 2, 3])
    with pytest.raises(TypeError, match="dtype must be a torch.dtype such as torch.float32, got 'float32'"):
        T(np.ones((2, 2)), dtype="float32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="feature_names must name all 2 columns"):
        T(np.ones((2, 2)), feature_names=["a"])
    with pytest.raises(ValueError, match=r"targets must be a 1-D sequence with one int per item \(2\)"):
        T(np.ones((2, 2)), [0, 1, 1])
    with pytest.raises(ValueError, match="classes names 1 classes but targets hold id 1"):
        T(np.ones((2, 2)), [0, 1], classes=["a"])


def test_constructor_refuses_class_ids_past_int64() -> None:
    # integral floats become class ids; past int64 astype would wrap them silently
    with pytest.raises(ValueError, match=r"targets must fit int64, got the class id 1e\+30"):
        dataforge.TableDataset(np.zeros((2, 1)), np.array([1e30, 2.0]))
    with pytest.raises(ValueError, match="targets must fit int64"):
        dataforge.TableDataset(np.zeros((1, 1)), np.array([2**64 - 1], dtype=np.uint64))
    assert dataforge.TableDataset(np.zeros((2, 1)), np.array([3.0, 2.0])).labels.tolist() == [3, 2]


@pytest.mark.parametrize("ends", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_csv_line_ends_and_bom_as_open_newline_empty(tmp_path: Path, ends: bytes) -> None:
    # lines end as open(newline="") ends them (a lone \r too); a UTF-8 BOM is not part of the header
    p = tmp_path / "e.csv"
    p.write_bytes(b"\xef\xbb\xbf" + ends.join([b"a,y", b"1,0", b'"2",1', b""]))
    ds = dataforge.TableDataset.from_csv(p, target="y")
    assert ds.feature_names == ["a"] and ds.labels.tolist() == [0, 1]
    p.write_bytes(ends.join([b"a,y", b"1,0", b"2,\xff", b""]))
    with pytest.raises(ValueError, match=r"line 3 of .*e.csv' is not UTF-8 \(byte b'\\xff' at column 3\)"):
        dataforge.TableDataset.from_csv(p, target="y")


def test_from_file_picks_the_reader_by_extension(tmp_path: Path) -> None:
    import gzip

    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        f.write("a,b,y\n1,2,0\n3,4,1\n")
    (tmp_path / "t.jsonl").write_text('{"a": 1, "b": 2, "y": 0}\n\n{"a": 3, "b": 4, "y": 1}\n')
    for name in ("t.csv.gz", "t.jsonl"):
        ds = dataforge.TableDataset.from_file(tmp_path / name, target="y")
        assert ds.features.tolist() == [[1.0, 2.0], [3.0, 4.0]] and ds.labels.tolist() == [0, 1]
    (tmp_path / "t.jsonl").write_text('{"a": 1, "y": 0}\n\n{"a": "x", "y": 1}\n')
    with pytest.raises(ValueError, match="feature column 'a' has a non-numeric value 'x' at line 3"):
        dataforge.TableDataset.from_file(tmp_path / "t.jsonl", target="y")
    (tmp_path / "t.dat").write_text("a,y\n1,0\n")
    with pytest.raises(ValueError, match="cannot tell the format of .*t.dat.*register_reader"):
        dataforge.TableDataset.from_file(tmp_path / "t.dat", target="y")
    assert dataforge.TableDataset.from_file(tmp_path / "t.dat", target="y", format="csv").labels.tolist() == [0]
