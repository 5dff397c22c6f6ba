"""The transforms benchmark per part on tiny data: repeats, progress, tokens, options
(tests/transforms/test_bench_transforms.py is the smoke run of both parts)."""

from __future__ import annotations

import pytest

from dataforge.bench import transforms
from dataforge.bench.common import BenchError


def test_image_part_tiny(tiny_images):
    lines: list[str] = []
    r = transforms.run(data=str(tiny_images), seconds=0.02, repeats=2, batch_size=4, image_size=32,
                       parts=("image",), progress=lines.append)
    img = r["image"]
    assert set(img["arms"]) == {"stock", "dataforge", "dataforge-whole"}
    for arm in img["arms"].values():
        assert len(arm["runs"]) == 2 and arm["samples_per_s"] > 0 and arm["bytes_per_sample_out"] > 0
    assert img["arms"]["dataforge"]["bytes_per_sample_out"] == 3 * 32 * 32  # uint8 out
    assert len(img["speedup_per_repeat"]) == 2 and img["meets_target"] == (img["speedup"] >= 1.8)
    assert img["num_images"] == 12 and img["data"] == str(tiny_images) and "text" not in r
    assert lines[:3] == [f"transforms: repeat 1/2 {n}" for n in ("stock", "dataforge", "dataforge-whole")]
    assert "speedup" in transforms.format_table(r)


def test_text_part_tiny(tiny_corpus):
    pytest.importorskip("tokenizers")
    r = transforms.run(data=str(tiny_corpus), repeats=2, batch_size=8, parts=("text",), quick=True)
    txt = r["text"]
    assert set(txt["arms"]) == {"per_sample", "packed"} and "image" not in r
    assert all(len(a["runs"]) == 2 for a in txt["arms"].values())
    assert {run["tokens"] for a in txt["arms"].values() for run in a["runs"]} == {txt["tokens_per_epoch"]}
    assert txt["num_docs"] == 60 and len(txt["speedup_per_repeat"]) == 2
    assert "tokens/s" in transforms.format_table(r)


def test_unknown_part_is_named():
    with pytest.raises(BenchError, match="parts must be"):
        transforms.run(parts=("audio",))


def test_unknown_option_is_named_not_dropped():
    with pytest.raises(BenchError, match=r"unknown options for the transforms benchmark: \['workers'\]"):
        transforms.run(parts=("image",), workers=2)
