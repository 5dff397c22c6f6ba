from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dataforge.synthetic import make_image_folder

    root = tmp_path_factory.mktemp("bench_images")
    return make_image_folder(root, num_images=12, num_classes=3, imbalance=2.0, sizes=(40, 64),
                             progress=False)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dataforge.synthetic import make_text_corpus

    path = tmp_path_factory.mktemp("bench_text") / "corpus.jsonl"
    return make_text_corpus(path, num_docs=60, num_classes=3, imbalance=2.0, mean_length=20,
                            progress=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Demo data of every test goes to one temporary cache, never to ~/.cache.
    monkeypatch.setenv("DATAFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "demo_cache"))
