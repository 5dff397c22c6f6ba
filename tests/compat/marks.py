"""The three marks every vendored test that does not simply pass carries.

Each names its category, so ``pytest -rxXs tests/compat`` lists the whole diagnosis:

- ``bug(...)``: a dataforge bug (``xfail(strict=False)``), listed as open in
  ``tests/compat/README.md`` with a reproduction;
- ``differs(anchor, ...)``: a deliberate difference (``xfail(strict=True)``), explained
  in ``docs/stock_differences.md`` under ``anchor``;
- ``not_applicable(...)``: the test checks something a DataLoader replacement does not
  own (torch internals, CUDA on a CPU machine...): skipped with the reason.
"""

from __future__ import annotations

from typing import Any

import pytest

DOC = "docs/stock_differences.md"


def bug(reason: str) -> Any:
    """An open dataforge bug: the test fails today and must pass once it is fixed."""
    return pytest.mark.xfail(strict=False, reason=f"dataforge bug: {reason} (tests/compat/README.md)")


def differs(anchor: str, reason: str) -> Any:
    """A deliberate difference from the stock loader, documented in ``DOC#anchor``."""
    return pytest.mark.xfail(strict=True, reason=f"deliberate difference, see {DOC}#{anchor}: {reason}")


def not_applicable(reason: str) -> Any:
    """A test of something outside a DataLoader replacement's contract."""
    return pytest.mark.skip(reason=f"not applicable: {reason}")
