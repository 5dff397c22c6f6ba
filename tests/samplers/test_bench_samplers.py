"""Smoke test of the samplers benchmark module (tiny sizes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

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


def test_select_arms_orders_and_accepts_full_names():
    assert samplers.select_arms(None) == list(samplers.ARMS)
    assert samplers.select_arms("bucket, undersample") == ["undersample", "bucket"]
    assert samplers.select_arms(["class_balanced_sqrt", "padding"]) == ["padding", "sqrt"]
    with pytest.raises(samplers.BenchError, match="unknown arm 'nope'.*undersample"):
        samplers.select_arms("undersample,nope")
    with pytest.raises(samplers.BenchError, match="empty"):
        samplers.select_arms([])


def test_run_only_the_chosen_arms():
    result = samplers.run(quick=True, num_labels=5_000, repeats=1, arms="undersample,padding")
    assert result["config"]["arms"] == ["padding", "undersample"]
    assert set(result) == {"benchmark", "env", "config", "bucket", "streamed"}
    assert list(result["streamed"]) == ["class_balanced_undersample"]
    counts = np.bincount(samplers.make_labels(5_000, num_classes=100))
    assert result["streamed"]["class_balanced_undersample"]["epoch_length"] == 100 * counts.min()
    table = samplers.format_table(result)
    assert "arms padding,undersample" in table and "class_balanced_undersample" in table
    assert "WeightedRandomSampler" not in table


def test_cli_arms(tmp_path, capsys):
    from dataforge.cli import main

    out = tmp_path / "o"
    rc = main(["bench", "samplers", "--quick", "--num-labels", "4000", "--repeats", "1",
               "--arms", "many_classes", "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "samplers.json").read_text())
    streamed = doc["benchmarks"]["samplers"]["streamed"]
    assert list(streamed) == [samplers.MANY_CLASSES_ARM]
    assert streamed[samplers.MANY_CLASSES_ARM]["epoch_length"] == 4000  # sqrt: N per epoch
    assert main(["bench", "samplers", "--arms", "bogus", "--out", str(out)]) == 2
    assert "unknown arm 'bogus'" in capsys.readouterr().err
