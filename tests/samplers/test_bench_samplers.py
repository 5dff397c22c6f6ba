"""Smoke test of the samplers benchmark module (tiny sizes)."""

from __future__ import annotations

import json

import numpy as np

from dataforge.bench import samplers


def test_quick_run_small():
    result = samplers.run(quick=True, num_labels=20_000, repeats=1)
    json.dumps(result)
    assert result["stock_at_n"]["error"] is None
    assert "2^24" in result["stock_at_2_24_plus_1"]["error"]
    assert result["class_balanced"]["indices"] == 20_000
    assert result["bucket"]["bucket_batch_size_32"]["padding_efficiency"] >= 0.95
    table = samplers.format_table(result)
    assert "ClassBalancedSampler" in table and "padding efficiency" in table
    streamed = result["streamed"]
    assert set(streamed) == set(samplers.STREAMED_ARMS)
    labels = samplers.make_labels(20_000, num_classes=100)
    counts = np.bincount(labels)
    assert streamed["class_balanced_oversample"]["epoch_length"] == 100 * counts.max()
    assert streamed["weighted_20x"]["epoch_length"] == 400_000
    assert streamed["bucket_oversample"]["epoch_length"] == 100 * counts.max()  # indices in batches
    assert all(d["indices_per_s"] > 0 and d["first_index_s"] >= 0 for d in streamed.values())
    assert "default arguments" in table
