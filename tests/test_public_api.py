"""The public API contract: every exported name resolves, lazily."""

from __future__ import annotations

import subprocess
import sys

import dataforge


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert dataforge.__all__ == sorted(dataforge.__all__)
    for name in dataforge.__all__:
        assert getattr(dataforge, name) is not None, name


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        dataforge.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_import_needs_no_optional_extras() -> None:
    code = (
        "import sys\n"
        "for m in ('transformers', 'tokenizers', 'albumentations', 'fsspec', 'matplotlib'):\n"
        "    sys.modules[m] = None  # any import of it now fails\n"
        "import dataforge\n"
        "for name in dataforge.__all__:\n"
        "    getattr(dataforge, name)\n"
        "import dataforge.transforms, dataforge.synthetic\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
