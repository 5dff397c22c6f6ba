"""``TableDataset``: numeric rows from a CSV, JSONL or Parquet file, with an optional target.

Files are read through the reader registry (``dataforge.datasets.readers``:
:class:`~dataforge.datasets.readers.FileRecords`), so any registered format works with
:meth:`TableDataset.from_file`; values become numbers with numpy (no pandas). Features are one
``(N, F)`` tensor; a classification target becomes int64 ``.labels`` (string
targets mapped to sorted class ids in ``.classes``); a non-integer numeric target
is kept as a float regression target (``.targets``, no ``.labels``).

A row that cannot be read (bad UTF-8, a line or field over the limits of
``dataforge.datasets.records``, bad JSON, a target that is not a valid class id) is
a :class:`~dataforge.datasets.records.RecordError` naming the file and the line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from dataforge.datasets.labels import as_labels
from dataforge.datasets.map_style import MapDataset
from dataforge.datasets.readers import FileRecords
from dataforge.datasets.records import MAX_LINE_BYTES, RecordError, short
from dataforge.datasets.tar_stream import MAX_EXPANSION

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_file(path: Any, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path, got {type(path).__name__} {path!r}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{name} does not exist or is not a file: {str(p)!r}")
    return p


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else None  # inf and nan are not integers
    try:
        return int(str(v).strip())
    except ValueError:
        return None


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past 1e308
        return None


def encode_targets(values: Sequence[Any], lines: Sequence[int], where: str) -> tuple[str, np.ndarray, list[str] | None]:
    """Turn raw target values into ``(kind, array, classes)``.

    ``kind`` is ``"int"`` (int64 class ids), ``"str"`` (ids into sorted ``classes``)
    or ``"float"`` (float32 regression values).

    Raises:
        RecordError: a missing value, a negative or over-int64 class id, or a
            non-finite regression value, naming ``where`` and the line.
    """
    for v, line in zip(values, lines):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise RecordError(f"{where}: missing target value at line {line}", path=where, line=line)
    ints = [_as_int(v) for v in values]
    if all(i is not None for i in ints):
        for i, line in zip(ints, lines):
            if not 0 <= cast(int, i) < 2**63:
                what = "a negative class id" if cast(int, i) < 0 else "a class id past int64"
                raise RecordError(
                    f"{where}: target {short(i)} at line {line} is {what}; class ids are 0..K-1 "
                    "(or write the classes as names)",
                    path=where, line=line,
                )
        return "int", np.asarray(ints, dtype=np.int64), None
    floats = [_as_float(v) for v in values]
    if all(f is not None for f in floats):
        for f, v, line in zip(floats, values, lines):
            if not (math.isfinite(cast(float, f)) and abs(cast(float, f)) <= _FLOAT32_MAX):
                raise RecordError(
                    f"{where}: target {short(v)} at line {line} is not a finite float32 value",
                    path=where, line=line,
                )
        return "float", np.asarray(floats, dtype=np.float32), None
    names = [str(v) for v in values]
    classes = sorted(set(names))
    lookup = {c: i for i, c in enumerate(classes)}
    return "str", np.asarray([lookup[n] for n in names], dtype=np.int64), classes


def _matrix(rows: list[list[Any]], lines: list[int], columns: list[str], fill: float | None, where: str) -> np.ndarray:
    if fill is not None:
        rows = [[fill if v is None or v == "" else v for v in row] for row in rows]
    try:
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(columns))
    except (TypeError, ValueError, OverflowError):
        pass
    for row, line in zip(rows, lines):  # slow path: find the first bad cell
        for v, col in zip(row, columns):
            if _as_float(v) is None:
                hint = " (a missing value: pass fill_missing=float('nan') or a number)" if v in ("", None) else ""
                what = "a number past the float64 range" if isinstance(v, int) else "a non-numeric value"
                raise RecordError(
                    f"{where}: feature column {col!r} has {what} {short(v)} at line {line}"
                    f"{hint}; leave the column out with features=[...]",
                    path=where, line=line,
                )
    raise ValueError(f"{where}: could not convert the feature columns to numbers")


class TableDataset(MapDataset[Any]):
    """Rows of numeric features, with an optional target.

    Items are ``(features, label)`` when targets are held, else ``features``
    alone (``train=False``, the inference / Titanic-test case). ``features`` is
    a 1-D tensor of ``dtype``; ``label`` an int (class id) or a float.

    Args:
        features: an ``(N, F)`` array or tensor.
        targets: ``N`` class ids (ints) or regression values (floats), or None.
        feature_names: names of the ``F`` columns.
        classes: names of the class ids, when they came from strings.
        dtype: torch dtype of the feature tensor.
        target: name of the target column (informational).

    Example:
        >>> import tempfile, dataforge
        >>> path = tempfile.mkdtemp() + "/t.csv"
        >>> _ = open(path, "w").write("age,fare,survived\\n22,7.25,no\\n38,71.3,yes\\n")
        >>> ds = dataforge.TableDataset.from_csv(path, target="survived")
        >>> ds[1], ds.classes, ds.labels.tolist()
        ((tensor([38.0000, 71.3000]), 1), ['no', 'yes'], [0, 1])
        >>> dataforge.TableDataset.from_csv(path, target="survived", train=False)[0]
        tensor([22.0000,  7.2500])
    """

    def __init__(
        self,
        features: Any,
        targets: Any = None,
        *,
        feature_names: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float32,
        target: str | None = None,
    ) -> None:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
        x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
        if x.ndim != 2:
            raise ValueError(f"features must be 2-D (rows, columns), got shape {tuple(x.shape)}")
        self.features = x.to(dtype).contiguous()
        n, f = x.shape
        if feature_names is not None and len(feature_names) != f:
            raise ValueError(f"feature_names must name all {f} columns, got {list(feature_names)!r}")
        self.feature_names = list(feature_names) if feature_names is not None else [str(i) for i in range(f)]
        self.classes = list(classes) if classes is not None else None
        self.target = target
        self._labels: np.ndarray | None = None
        self.targets: np.ndarray | None = None
        if targets is not None:
            t = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
            if t.dtype.kind == "f" and not np.all(t == np.round(t)):
                if t.shape != (n,):
                    raise ValueError(f"targets must have one value per row ({n}), got shape {t.shape}")
                self.targets = t.astype(np.float32)
            else:
                self._labels = as_labels(t, n, "targets")
                self.targets = self._labels
                if self.classes is not None and n and int(self._labels.max()) >= len(self.classes):
                    raise ValueError(
                        f"classes names {len(self.classes)} classes but targets hold id {int(self._labels.max())}"
                    )

    @property
    def train(self) -> bool:
        return self.targets is not None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def _target(self, index: int) -> int | float:  # only called when targets are held
        t = cast(np.ndarray, self.targets)
        return int(t[index]) if self._labels is not None else float(t[index])

    def _get(self, index: int) -> Any:
        row = self.features[index]
        return row if self.targets is None else (row, self._target(index))

    def _get_batch(self, indices: list[int]) -> list[Any]:
        rows = list(self.features[torch.as_tensor(indices, dtype=torch.long)].unbind(0)) if indices else []
        if self.targets is None:
            return rows
        return [(r, self._target(i)) for r, i in zip(rows, indices)]

    # ---- readers ---------------------------------------------------------
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        target: str | None = None,
        features: Sequence[str] | None = None,
        train: bool = True,
        dtype: torch.dtype = torch.float32,
        *,
        format: str | None = None,
        fill_missing: float | None = None,
        delimiter: str = ",",
        max_line_bytes: int = MAX_LINE_BYTES,
        max_expansion: float | None = MAX_EXPANSION,
    ) -> TableDataset:
        """Read a file of any registered format (``dataforge.datasets.readers``); the
        columns are the header or schema (CSV, Parquet), else the keys of the first record.

        Args:
            path: the file.
            target: the label column (required when ``train=True``; with
                ``train=False`` it is dropped if present, and may be absent).
            features: numeric columns to use, in order (default: all but ``target``).
            train: keep the target (items ``(x, y)``) or not (items ``x``).
            dtype: torch dtype of the features.
            format: a registered reader name (``"csv"``, ``"jsonl"``, ``"parquet"``, ...),
                or ``None`` to pick it by the file's extension.
            fill_missing: value for empty cells (default: an empty cell is an error).
            delimiter: the CSV field separator.
            max_line_bytes: the longest line read (``dataforge.datasets.records``).
            max_expansion: the bound on how much a ``.gz`` file may expand (NOTE
                [expansion bound] in ``tar_stream.py``); ``None``: unbounded.

        Raises:
            RecordError: a row that cannot be read, naming the file and the line (the
                row number for Parquet).
        """
        p = check_file(path)
        where = str(p)
        records = FileRecords(p, format, max_line_bytes=max_line_bytes, delimiter=delimiter,
                              max_expansion=max_expansion)
        rows = iter(records)
        first = next(rows, None)
        columns = records.columns if records.columns is not None else None if first is None else list(first[1])
        if first is None:
            name = records.reader.name
            if columns is None:
                raise ValueError(f"{where!r} is empty: expected a header row naming the columns" if name == "csv"
                                 else f"{where!r} has no records" + (": expected one JSON object per line"
                                                                     if name == "jsonl" else ""))
            if name != "csv":
                raise ValueError(f"{where!r} has no rows")
        return cls._from_rows(where, cast(list[str], columns), chain([first] if first else [], rows),
                              target, features, train, dtype, fill_missing)

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        target: str | None = None,
        features: Sequence[str] | None = None,
        train: bool = True,
        dtype: torch.dtype = torch.float32,
        *,
        fill_missing: float | None = None,
        delimiter: str = ",",
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> TableDataset:
        """Read a CSV file with a header row (``.gz`` too); arguments as :meth:`from_file`."""
        return cls.from_file(path, target, features, train, dtype, format="csv", fill_missing=fill_missing,
                             delimiter=delimiter, max_line_bytes=max_line_bytes)

    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike[str],
        target: str | None = None,
        features: Sequence[str] | None = None,
        train: bool = True,
        dtype: torch.dtype = torch.float32,
        *,
        fill_missing: float | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> TableDataset:
        """Read a JSONL file, one JSON object a line; arguments as :meth:`from_file`.

        The columns are the keys of the first object.
        """
        return cls.from_file(path, target, features, train, dtype, format="jsonl", fill_missing=fill_missing,
                             max_line_bytes=max_line_bytes)

    @classmethod
    def from_parquet(
        cls,
        path: str | os.PathLike[str],
        target: str | None = None,
        features: Sequence[str] | None = None,
        train: bool = True,
        dtype: torch.dtype = torch.float32,
        *,
        fill_missing: float | None = None,
    ) -> TableDataset:
        """Read a Parquet file (needs the ``parquet`` extra); arguments as :meth:`from_file`.

        Errors name the row by its 1-based number in the file.
        """
        return cls.from_file(path, target, features, train, dtype, format="parquet", fill_missing=fill_missing)

    @classmethod
    def _from_rows(
        cls,
        where: str,
        columns: list[str],
        rows: Iterable[tuple[int, dict[str, Any]]],
        target: str | None,
        features: Sequence[str] | None,
        train: bool,
        dtype: torch.dtype,
        fill_missing: float | None,
    ) -> TableDataset:
        if not isinstance(train, bool):
            raise TypeError(f"train must be a bool, got {train!r}")
        if train and target is None:
            raise ValueError("target is required when train=True: pass target='<label column>'")
        if target is not None and target not in columns and train:
            raise ValueError(f"target {target!r} is not a column of {where}; valid columns: {columns}")
        if features is None:
            features = [c for c in columns if c != target]
        elif isinstance(features, str):
            raise TypeError(f"features must be a list of column names, got the string {features!r}")
        unknown = [c for c in features if c not in columns]
        if unknown:
            raise ValueError(f"features {unknown} are not columns of {where}; valid columns: {columns}")
        if target in features:
            raise ValueError(f"features must not contain the target column {target!r}")
        if not features:
            raise ValueError(f"features is empty: {where} has no column besides target {target!r}")
        keep: list[str] = list(features) + ([target] if train and target is not None else [])
        lines: list[int] = []
        cells: list[list[Any]] = []
        for line, row in rows:
            missing = [c for c in keep if c not in row]
            if missing:
                raise RecordError(
                    f"{where}: unknown key {missing[0]!r} at line {line}; keys present: {list(row)[:20]}",
                    path=where, line=line,
                )
            cells.append([row[c] for c in keep])
            lines.append(line)
        if not cells:
            raise ValueError(f"{where} has a header but no data rows")
        nf = len(features)
        x = _matrix([r[:nf] for r in cells], lines, list(features), fill_missing, where)
        if not train:
            return cls(x, None, feature_names=features, dtype=dtype)
        _, y, classes = encode_targets([r[nf] for r in cells], lines, where)
        return cls(x, y, feature_names=features, classes=classes, dtype=dtype, target=target)

    def __repr__(self) -> str:
        return f"TableDataset(len={len(self)}, features={self.feature_names}, target={self.target!r})"


def read_jsonl(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line.

    Raises:
        RecordError: naming the file and the line, for a line that is not a JSON
            object within the limits of ``dataforge.datasets.records``.
    """
    return iter(FileRecords(path, "jsonl", max_line_bytes=max_line_bytes))
