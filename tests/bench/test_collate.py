"""The collate benchmark's result on a tiny batch: windows, CPU ratios, table rows, options
(tests/collate/test_bench_collate.py covers the arms without transformers and the script)."""

from __future__ import annotations

import pytest

from dataforge.bench import collate
from dataforge.bench.common import BenchError


def test_run_tiny_reports_every_arm_on_both_forms():
    r = collate.run(seconds=0.04, repeats=2, batch_size=8, mean_length=12.0)
    names = {"dataforge", "pad_sequence"} | ({"hf"} if not r["absent"] else set())
    assert set(r["forms"]) == {"lists", "tensors"}
    for form in r["forms"].values():
        assert set(form["arms"]) == names
        for arm in form["arms"].values():
            assert len(arm["repeats"]) == 2 and len(arm["cpu_ms_repeats"]) == 2
            assert arm["batches_per_s"] > 0 and arm["ms_per_batch"] == pytest.approx(1e3 / arm["batches_per_s"])
        assert set(form["ratios"]) == set(form["cpu_ratios"]) == {
            f"dataforge_vs_{n}" for n in names - {"dataforge"}}
    assert r["config"]["batch_size"] == 8 and r["config"]["seconds_per_window"] == pytest.approx(0.02)
    table = collate.format_table(r).splitlines()
    assert table[0].startswith("collate: 8 sequences")
    assert sum(line.split()[0] in ("lists", "tensors") for line in table) == 2 * len(names)


def test_unknown_option_is_named():
    with pytest.raises(BenchError, match="unknown options"):
        collate.run(seconds=0.04, repeats=1, bogus=1)
