"""Smoke test of the transforms benchmark (tiny data, short windows)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tokenizers")


def test_bench_transforms_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFORGE_CACHE", str(tmp_path))
    from dataforge.bench import transforms

    result = transforms.run(
        quick=True, seconds=0.01, repeats=1, num_images=4, num_docs=40, batch_size=4
    )
    json.dumps(result)  # JSON-serialisable
    img, txt = result["image"], result["text"]
    assert set(img["arms"]) == {"stock", "dataforge", "dataforge-whole"}
    assert img["speedup_whole_decode"] > 0 and isinstance(img["region_decode"], bool)
    assert all(a["samples_per_s"] > 0 for a in img["arms"].values())
    assert img["arms"]["dataforge"]["bytes_per_sample_out"] * 4 == img["arms"]["stock"]["bytes_per_sample_out"]
    assert txt["arms"]["packed"]["tokens_per_s"] > 0 and txt["tokens_per_epoch"] > 0
    table = transforms.format_table(result)
    assert "speedup" in table and "tokens/s" in table and "whole decode" in table
