"""The fuzz harness (tests/fuzz/fuzz_decode.py): its checks on every seed, and a short
bounded atheris run (skipped without atheris: ``pip install 'dataforge[fuzz]'``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import fuzz_decode

HARNESS = Path(fuzz_decode.__file__)


def test_every_seed_passes_the_harness_checks(tmp_path):
    n = fuzz_decode.write_seed_corpus(tmp_path)
    assert n == len(list(tmp_path.iterdir())) >= 10
    for path in sorted(tmp_path.iterdir()):
        fuzz_decode.one_input(path.read_bytes())  # raises on a finding


def test_the_harness_reports_a_region_that_differs_from_the_whole_decode(monkeypatch):
    import torch

    import dataforge.transforms.decode as dec
    from fuzz import jpeg_corpus as C

    if not dec.HAVE_ROI_DECODE:
        pytest.skip("the differential check needs dataforge._jpeg")
    real = dec.decode_region
    monkeypatch.setattr(dec, "decode_region", lambda *a, **k: real(*a, **k) ^ torch.tensor(1, dtype=torch.uint8))
    with pytest.raises(AssertionError, match="differs from the whole decode"):
        fuzz_decode.one_input(C.pil_jpeg(C.photo(40, 56)))


def test_a_short_bounded_fuzz_run_finds_nothing(tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    proc = subprocess.run(
        [sys.executable, str(HARNESS), "-max_total_time=20", "-timeout=10", "-rss_limit_mb=3072",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", str(corpus)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    assert runs is not None and int(runs.group(1)) > 0, proc.stderr[-2000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
