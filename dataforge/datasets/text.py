"""``TextDataset``: labelled (or unlabelled) texts from a JSONL, CSV or Parquet file.

Files are read through the reader registry (``dataforge.datasets.readers``:
:class:`~dataforge.datasets.readers.FileRecords`), so any registered format works with
:meth:`TextDataset.from_file`.

Texts live in a :class:`~dataforge.datasets.storage.StringStorage` (one byte
buffer plus offsets), so a corpus of millions of documents does not grow in
forked DataLoader workers. String labels are mapped to sorted class ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from dataforge.datasets.labels import as_labels
from dataforge.datasets.map_style import MapDataset
from dataforge.datasets.readers import FileRecords
from dataforge.datasets.records import MAX_LINE_BYTES, RecordError
from dataforge.datasets.storage import StringStorage
from dataforge.datasets.table import check_file, encode_targets
from dataforge.datasets.tar_stream import MAX_EXPANSION


class TextDataset(MapDataset[dict[str, Any]]):
    """Texts with optional class labels; items ``{"text": str, "label": int}``
    (``{"text": str}`` when unlabelled).

    Args:
        texts: the texts (any iterable of ``str``, or a ``StringStorage``).
        labels: one class id per text, or None.
        classes: names of the class ids, when they came from strings.

    Example:
        >>> import tempfile, dataforge
        >>> path = tempfile.mkdtemp() + "/t.jsonl"
        >>> _ = open(path, "w").write('{"text": "good", "label": "pos"}\\n{"text": "bad", "label": "neg"}\\n')
        >>> ds = dataforge.TextDataset.from_jsonl(path)
        >>> ds[0], ds.classes, ds.labels.tolist()
        ({'text': 'good', 'label': 1}, ['neg', 'pos'], [1, 0])
    """

    def __init__(
        self,
        texts: Iterable[str] | StringStorage,
        labels: Any = None,
        *,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.texts = texts if isinstance(texts, StringStorage) else StringStorage(texts)
        n = len(self.texts)
        self._labels = None if labels is None else as_labels(labels, n)
        if classes is not None:
            if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
                raise TypeError(f"classes must be a list of str, got {classes!r}")
            if self._labels is None:
                raise ValueError("classes were given without labels; pass labels= too")
            if n and not 0 <= int(self._labels.min()) <= int(self._labels.max()) < len(classes):
                raise ValueError(
                    f"labels must be ids in [0, {len(classes)}) to index classes={list(classes)!r}, "
                    f"got values in [{int(self._labels.min())}, {int(self._labels.max())}]"
                )
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def _get(self, index: int) -> dict[str, Any]:
        if self._labels is None:
            return {"text": self.texts[index]}
        return {"text": self.texts[index], "label": int(self._labels[index])}

    def tokenize(self, tokenizer: Any, *, max_length: int | None = None, batch_size: int = 1000) -> Any:
        """Tokenize every text in batches; see ``dataforge.datasets.packed.tokenize_dataset``."""
        from dataforge.datasets.packed import tokenize_dataset

        return tokenize_dataset(self, tokenizer, max_length=max_length, batch_size=batch_size)

    # ---- readers ---------------------------------------------------------
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        text_key: str = "text",
        label_key: str | None = "label",
        *,
        format: str | None = None,
        delimiter: str = ",",
        max_line_bytes: int = MAX_LINE_BYTES,
        max_expansion: float | None = MAX_EXPANSION,
    ) -> TextDataset:
        """Read a file of any registered format (``dataforge.datasets.readers``), picked by
        ``format`` or the file's extension; ``label_key=None`` for unlabelled text.

        A record that cannot be read (``max_line_bytes`` and the other limits of
        ``dataforge.datasets.records``) is a ``RecordError`` naming the file and the line;
        a key missing from a header or schema (CSV, Parquet) is named before any row is used.
        A ``.gz`` file that expands past ``max_expansion`` is refused (NOTE [expansion bound]
        in ``tar_stream.py``; ``None``: unbounded).
        """
        p = check_file(path)
        records = FileRecords(p, format, max_line_bytes=max_line_bytes, delimiter=delimiter,
                              max_expansion=max_expansion)
        return cls._from_records(str(p), _header_checked(records, text_key, label_key), text_key, label_key)

    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike[str],
        text_key: str = "text",
        label_key: str | None = "label",
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> TextDataset:
        """Read one JSON object per line; arguments as :meth:`from_file`."""
        return cls.from_file(path, text_key, label_key, format="jsonl", max_line_bytes=max_line_bytes)

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        text_key: str = "text",
        label_key: str | None = "label",
        *,
        delimiter: str = ",",
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> TextDataset:
        """Read a CSV file with a header row (``.gz`` too); arguments as :meth:`from_file`.

        A row with more or fewer fields than the header is an error naming its line; a
        field is bounded by ``csv.field_size_limit()``.
        """
        return cls.from_file(path, text_key, label_key, format="csv", delimiter=delimiter,
                             max_line_bytes=max_line_bytes)

    @classmethod
    def _from_records(
        cls,
        where: str,
        records: Iterable[tuple[int, dict[str, Any]]],
        text_key: str,
        label_key: str | None,
    ) -> TextDataset:
        if not isinstance(text_key, str):
            raise TypeError(f"text_key must be a str, got {text_key!r}")
        if label_key is not None and not isinstance(label_key, str):
            raise TypeError(f"label_key must be a str or None, got {label_key!r}")
        texts: list[str] = []
        raw_labels: list[Any] = []
        lines: list[int] = []
        for line, rec in records:
            for key in (text_key, label_key):
                if key is not None and key not in rec:
                    raise RecordError(
                        f"{where}: unknown key {key!r} at line {line}; keys present: {list(rec)[:20]}",
                        path=where, line=line,
                    )
                if key is not None and rec[key] is None:
                    raise RecordError(f"{where}: key {key!r} has no value at line {line}", path=where, line=line)
            text = rec[text_key]
            if not isinstance(text, str):
                raise TypeError(
                    f"{where}: {text_key!r} at line {line} must be a string, got {type(text).__name__}"
                )
            texts.append(text)
            if label_key is not None:
                raw_labels.append(rec[label_key])
                lines.append(line)
        if not texts:
            raise ValueError(f"{where} has no records: expected one text per line")
        if label_key is None:
            return cls(texts)
        kind, labels, classes = encode_targets(raw_labels, lines, where)
        if kind == "float":
            bad = next(v for v in raw_labels if not float(v).is_integer())
            raise ValueError(
                f"{where}: label {label_key!r} must be class ids or names, got the number {bad!r}"
            )
        return cls(texts, labels, classes=classes)

    def __repr__(self) -> str:
        classes = len(self.classes) if self.classes is not None else None
        return f"TextDataset(len={len(self)}, labelled={self._labels is not None}, classes={classes})"


def _header_checked(records: FileRecords, text_key: str, label_key: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``records``, after checking that a header or schema (when the format has one) holds
    the keys; an empty CSV (no header) is an error."""
    rows = iter(records)
    first = next(rows, None)
    header = records.columns
    where = records.path
    if header is None and first is None and records.reader.name == "csv":
        raise ValueError(f"{where!r} is empty: expected a header row naming the columns")
    if header is not None:
        for key in (text_key, label_key):
            if isinstance(key, str) and key not in header:
                raise ValueError(f"{where!r}: unknown key {key!r} at line 1 (the header); keys present: {header}")
    if first is not None:
        yield first
        yield from rows
