from __future__ import annotations

from dataforge.bench.common import interleaved, rotated


def test_rotated_shifts_the_order_each_repeat():
    names = ["a", "b", "c"]
    assert [rotated(names, r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert rotated([], 3) == []


def test_interleaved_runs_arms_in_rotated_order_and_keeps_repeat_order():
    calls: list[str] = []
    counts = {"a": 0, "b": 0}

    def arm(name: str):
        def call() -> int:
            calls.append(name)
            counts[name] += 1
            return counts[name]
        return call

    seen: list[tuple[int, str, int]] = []
    runs = interleaved({"a": arm("a"), "b": arm("b")}, 3, after=lambda r, n, v: seen.append((r, n, v)))
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert runs == {"a": [1, 2, 3], "b": [1, 2, 3]}
    assert seen == [(0, "a", 1), (0, "b", 1), (1, "b", 2), (1, "a", 2), (2, "a", 3), (2, "b", 3)]
