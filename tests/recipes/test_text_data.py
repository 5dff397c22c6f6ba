"""The text recipe reads its corpus through the reader registry (by extension)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ARGS = {"text_key": "text", "label_key": "label"}
ROWS = [{"text": f"doc {i}", "label": i % 3} for i in range(12)]


@pytest.fixture(scope="module")
def text_recipe() -> Any:
    sys.path.insert(0, str(RECIPES))
    try:
        return importlib.import_module("text_classification")
    finally:
        sys.path.remove(str(RECIPES))


@pytest.mark.parametrize("name", ["c.jsonl", "c.csv", "c.parquet"])
def test_each_registered_format_is_read(text_recipe: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in ROWS))
    elif name.endswith(".csv"):
        path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in ROWS))
    else:
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    ds = text_recipe.read_corpus(path, ARGS)
    assert len(ds) == len(ROWS)
    assert sorted(int(x) for x in ds.labels) == sorted(r["label"] for r in ROWS)


def test_an_extension_no_reader_claims_is_named(text_recipe: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text(json.dumps(ROWS[0]))
    with pytest.raises(text_recipe.RecipeError, match=r"no reader claims the extension of .*c\.txt.*\.jsonl"):
        text_recipe.read_corpus(path, ARGS)
