"""Memory of the loading processes: PSS of this process and of its worker processes.

NOTE [PSS]: the doctor reports proportional set size (PSS): pages shared between
processes count once, split between them. RSS would count a forked worker's
untouched copy of the parent's memory again in every worker; PSS grows only when a
worker really gets its own copy of a page, which is what copy-on-read (Python
refcounts touching every object of a dataset's list of paths) does. So PSS growth of
a worker over a run is the symptom to watch. PSS needs psutil (the ``dev`` extra) on
Linux; without it every figure is ``None`` and the report says "n/a".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MemorySample:
    """PSS in bytes per process label (``"main"``, ``"worker pid 1234"``) at one time."""

    t: float
    pss: dict[str, int] = field(default_factory=dict)


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _pss(proc: Any) -> int | None:
    try:
        info = proc.memory_full_info()
    except Exception:  # gone, no permission, or no PSS on this OS
        return None
    pss = getattr(info, "pss", None)
    return int(pss) if pss is not None else None


def available() -> bool:
    """True when PSS can be measured here (psutil present and PSS reported)."""
    psutil = _psutil()
    return psutil is not None and _pss(psutil.Process(os.getpid())) is not None


def _children(psutil: Any) -> list[Any]:
    try:
        return list(psutil.Process(os.getpid()).children(recursive=False))
    except Exception:  # this process's table cannot be read here
        return []


def child_pids() -> frozenset[int]:
    """Pids of this process's child processes now (empty without psutil)."""
    psutil = _psutil()
    return frozenset(c.pid for c in _children(psutil)) if psutil is not None else frozenset()


def sample(t: float, *, exclude: frozenset[int] = frozenset()) -> MemorySample | None:
    """PSS of this process and of each of its child processes now; ``None`` without psutil.

    Worker processes are this process's children; a thread engine's workers live in
    ``"main"``. ``exclude`` names children that are not the loader's workers: the
    caller takes :func:`child_pids` before the loader starts, so that a server, a
    resource tracker or another library's pool alive before it is not reported as
    a worker.
    """
    psutil = _psutil()
    if psutil is None:
        return None
    out = MemorySample(t)
    main = _pss(psutil.Process(os.getpid()))
    if main is None:
        return None
    out.pss["main"] = main
    for child in _children(psutil):
        if child.pid in exclude:
            continue
        value = _pss(child)
        if value is not None:
            out.pss[f"worker pid {child.pid}"] = value
    return out


def summarize(samples: list[MemorySample]) -> dict[str, dict[str, int]]:
    """``{label: {"first": bytes, "last": bytes, "growth": bytes}}`` of each process
    seen in the first sample that still lives in the last one (workers that came and
    went between the two are left out: their growth is unknown)."""
    if not samples:
        return {}
    first, last = samples[0].pss, samples[-1].pss
    return {
        label: {"first": first[label], "last": last[label], "growth": last[label] - first[label]}
        for label in first
        if label in last
    }
