"""Random draws without state: hypergeometric counts, subsets, block permutations,
weighted draws (alias tables, Gumbel top-k).

Every draw comes from the ``numpy.random.Generator`` passed in, so the same generator
state always gives the same result (on every rank).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> int(multivariate_hypergeometric(rng, np.array([5, 5]), 4).sum())
    4
"""

from __future__ import annotations

import numpy as np

from dataforge.samplers.functional import index_dtype

HG_LIMIT = 10**9  # numpy's hypergeometric draws need populations below this


def gumbel_top_k(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct indices drawn sequentially without replacement, ``P ~ weights``.

    Efraimidis-Spirakis / Gumbel-top-k: the ``k`` largest keys ``log(u) / w`` in
    decreasing order have the distribution of ``k`` successive weighted draws
    without replacement. Zero weights are never drawn.
    """
    positive = np.flatnonzero(weights > 0)
    keys = np.log(rng.random(len(positive)))
    keys /= weights[positive]
    if k < len(positive):
        top = np.argpartition(-keys, k - 1)[:k]
    else:
        top = np.arange(len(positive))
    top = top[np.argsort(-keys[top], kind="stable")]
    return positive[top]


def hypergeometric(rng: np.random.Generator, good: int, bad: int, nsample: int) -> int:
    """Good items among ``nsample`` drawn without replacement from ``good + bad``.

    numpy's sampler needs both populations below 10^9; larger ones (an epoch of
    billions of indices) are drawn by inversion of the exact pmf over a window of
    +-40 standard deviations around the mode, built from the pmf's ratios
    ``p(k + 1) / p(k)`` (products and quotients only: the same on every machine).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> 0 <= hypergeometric(rng, 3 * 10**9, 2 * 10**9, 1000) <= 1000
        True
    """
    if good < HG_LIMIT and bad < HG_LIMIT:
        return int(rng.hypergeometric(good, bad, nsample)) if nsample else 0
    total = good + bad
    lo, hi = max(0, nsample - bad), min(nsample, good)
    if lo == hi:
        return lo
    mode = min(max(int((nsample + 1) * (good + 1) // (total + 2)), lo), hi)
    var = nsample * (good / total) * (bad / total) * max(total - nsample, 1) / max(total - 1, 1)
    half = int(40 * np.sqrt(var)) + 2
    a, b = max(lo, mode - half), min(hi, mode + half)
    up = np.arange(mode, b, dtype=np.float64)  # ratios p(k + 1) / p(k), k = mode .. b - 1
    r_up = (good - up) * (nsample - up) / ((up + 1) * (bad - nsample + up + 1))
    down = np.arange(mode, a, -1, dtype=np.float64)  # ratios p(k - 1) / p(k), k = mode .. a + 1
    r_down = down * (bad - nsample + down) / ((good - down + 1) * (nsample - down + 1))
    pmf = np.concatenate((np.cumprod(r_down)[::-1], [1.0], np.cumprod(r_up)))
    cdf = np.cumsum(pmf)
    k = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return a + min(k, len(pmf) - 1)


def multivariate_hypergeometric(
    rng: np.random.Generator, colors: np.ndarray, nsample: int
) -> np.ndarray:
    """How many of each color ``nsample`` draws without replacement take (any totals).

    Splits the colors in two halves of about equal population while that exceeds
    numpy's limit (one :func:`hypergeometric` per split), then draws each part with
    numpy's ``multivariate_hypergeometric(..., method="marginals")`` (O(colors)).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> out = multivariate_hypergeometric(rng, np.array([10**9, 10**9, 5]), 100)
        >>> int(out.sum()), bool(out[2] <= 5)
        (100, True)
    """
    colors = np.asarray(colors, dtype=np.int64)
    out = np.zeros(len(colors), np.int64)
    stack = [(0, len(colors), int(colors.sum()), int(nsample))]
    while stack:
        lo, hi, total, m = stack.pop()
        if m == 0:
            continue
        if m == total:
            out[lo:hi] = colors[lo:hi]
        elif total < HG_LIMIT:
            out[lo:hi] = rng.multivariate_hypergeometric(colors[lo:hi], m, method="marginals")
        elif hi - lo == 1:
            out[lo] = m
        else:
            cum = np.cumsum(colors[lo:hi])
            mid = lo + min(max(int(np.searchsorted(cum, total / 2)), 1), hi - lo - 1)
            left = int(cum[mid - lo - 1])
            x = hypergeometric(rng, left, total - left, m)
            stack.append((mid, hi, total - left, m - x))
            stack.append((lo, mid, left, x))
    return out


def block_sample(
    src: np.ndarray, counts: np.ndarray, block: int, dst: np.ndarray, rng: np.random.Generator
) -> None:
    """Each run of ``block`` items of ``src`` gives ``counts[b]`` of its items, a uniform
    subset in uniformly random order, written to ``dst`` one run after the other.

    A run whose count is its length is permuted whole. Every run is drawn in cache and
    the cost is O(run) at most, whatever ``len(src)`` is: no mask or permutation of all
    of ``src`` (NOTE [pass cut short] in ``quota_stream.py``).

    Example:
        >>> dst = np.empty(5, np.int64)
        >>> block_sample(np.arange(10), np.array([4, 1]), 5, dst, np.random.default_rng(0))
        >>> bool(dst[:4].max() < 5), len(set(dst[:4].tolist())), bool(dst[4] >= 5)
        (True, 4, True)
    """
    a = 0
    for b, c in enumerate(counts.tolist()):
        if c == 0:
            continue
        part = src[b * block : (b + 1) * block]
        if c > len(part):
            raise ValueError(f"counts[{b}]={c} exceeds run {b}'s {len(part)} items")
        pick = rng.permutation(c) if c == len(part) else rng.choice(len(part), c, replace=False)
        np.take(part, pick, out=dst[a : a + c])
        a += c


# NOTE [alias chunk]: the table is built in about twenty vectorised passes per chunk of
# weights; chunks of 2^16 (512 KiB of float64) keep those passes in the core's cache,
# where 2^20 streamed each through memory (at 20M weights: 0.56-0.70 CPU-s against
# 1.0-1.2). The chunking decides the rounding of the prefix sums, so it is part of
# which table (and which draws) a seed gives.
ALIAS_CHUNK = 1 << 16


def alias_table(weights: np.ndarray, chunk: int = ALIAS_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of ``weights``: ``(thresholds, aliases)``, 8 bytes per index.

    A draw picks a slot ``i`` uniformly and keeps it when a uniform 32-bit integer
    is below ``thresholds[i]``, else takes ``aliases[i]``: O(1) per draw, no
    search. Slot probabilities are exact up to float64 prefix sums and 2^-32.

    NOTE [alias by prefix sums]: Vose's sweep pairs each light slot (``p < 1``,
    ``p = n * w / sum(w)``) with the current heavy one and moves on to the next
    heavy when the current one drops below 1. Its result has a closed form: with
    ``D`` the prefix sums of the lights' deficits ``1 - p`` and ``S`` those of the
    heavies' surpluses ``p - 1`` (each in index order), light ``k`` takes the first
    heavy ``j`` with ``S[j] > D[k - 1]``, and heavy ``j`` keeps ``1 + S[j] - D[m]``
    of its slot (``m``: the lights taken by heavies up to ``j``), the rest going
    to heavy ``j + 1``. So the table is built with vectorised searches, chunk by
    chunk; beyond the table it keeps 12 bytes per heavy index.

    Example:
        >>> thr, alias = alias_table(np.array([1.0, 0.0, 3.0]))
        >>> rng = np.random.default_rng(0)
        >>> np.bincount(alias_draw(thr, alias, 40_000, rng, np.int64), minlength=3).round(-3).tolist()
        [10000, 0, 30000]
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    scale = n / float(w.sum())
    itype = index_dtype(n)
    thresholds = np.empty(n, np.uint32)
    aliases = np.empty(n, itype)
    top = float(1 << 32)
    heavies = _HeavyScan(w, scale, chunk, itype)

    def resolve(u: int, kept: np.ndarray) -> None:  # the first u pending heavies keep ``kept``
        hv, nxt = heavies.idx[:u], heavies.idx[1 : u + 1]
        thresholds[hv] = np.clip(kept * top, 0, top - 1)
        aliases[hv[: len(nxt)]] = nxt
        if len(nxt) < u:
            aliases[hv[-1]] = hv[-1]  # the last heavy keeps its whole slot
        full = kept >= 1.0
        aliases[hv[full]] = hv[full]
        heavies.drop(u)

    heavies.extend_past(0.0)
    u = int(np.searchsorted(heavies.s, 0.0, side="right"))  # S == 0: no light before them
    resolve(u, np.ones(u))
    running = 0.0  # D before the current chunk
    for s in range(0, n, chunk):
        p = w[s : s + chunk] * scale
        light = np.flatnonzero(p < 1.0)
        deficit = 1.0 - p[light]
        d_incl = np.cumsum(deficit)
        d_incl += running
        d_prev = d_incl - deficit
        after = float(d_incl[-1]) if len(light) else running
        heavies.extend_past(after)
        u = int(np.searchsorted(heavies.s, after, side="right"))
        # the first u pending heavies fall among this chunk's lights: pos = lights before
        # each; light k's heavy is the first with S > D[k - 1], i.e. pending #{pos <= k}
        pos = np.searchsorted(d_prev, heavies.s[:u], side="left")
        j = np.cumsum(np.bincount(pos, minlength=len(light) + 1)[: len(light)])
        np.minimum(j, max(len(heavies.idx) - 1, 0), out=j)
        li = light + s
        aliases[li] = heavies.idx[j] if len(heavies.idx) else li
        thresholds[li] = np.minimum(p[light] * top, top - 1)
        if u:
            resolve(u, 1.0 + heavies.s[:u] - d_incl[np.maximum(pos - 1, 0)])
        running = after
    while heavies.extend_past(np.inf, limit=chunk) or len(heavies.idx):  # past the last light
        u = min(chunk, len(heavies.idx))
        resolve(u, 1.0 + heavies.s[:u] - running)
    return thresholds, aliases


class _HeavyScan:
    """The heavy slots (``p >= 1``) in index order with their surplus prefix sums ``S``,
    scanned forward on demand; only those not yet resolved are held."""

    def __init__(self, w: np.ndarray, scale: float, chunk: int, itype: type[np.integer]) -> None:
        self.w, self.scale, self.chunk, self.itype = w, scale, chunk, itype
        self.pos = 0  # next index of w to scan
        self.total = 0.0  # S of the last heavy scanned
        self.idx = np.empty(0, itype)
        self.s = np.empty(0, np.float64)

    def extend_past(self, value: float, limit: int | None = None) -> bool:
        """Scan until a pending heavy has ``S > value`` (or ``limit`` are pending, or the
        end); whether anything was scanned."""
        parts_i, parts_s, scanned = [self.idx], [self.s], False
        pending = len(self.idx)
        last = float(self.s[-1]) if pending else -np.inf
        while self.pos < len(self.w) and last <= value and (limit is None or pending < limit):
            p = self.w[self.pos : self.pos + self.chunk] * self.scale
            h = np.flatnonzero(p >= 1.0)
            sums = np.cumsum(p[h] - 1.0)
            sums += self.total
            if len(h):
                self.total = last = float(sums[-1])
                parts_i.append((h + self.pos).astype(self.itype))
                parts_s.append(sums)
                pending += len(h)
            self.pos += self.chunk
            scanned = True
        if scanned:
            self.idx, self.s = np.concatenate(parts_i), np.concatenate(parts_s)
        return scanned

    def drop(self, u: int) -> None:
        self.idx, self.s = self.idx[u:], self.s[u:]


def alias_draw(
    thresholds: np.ndarray,
    aliases: np.ndarray,
    num_samples: int,
    rng: np.random.Generator,
    dtype: type[np.integer],
) -> np.ndarray:
    """``num_samples`` i.i.d. draws from an :func:`alias_table`."""
    slots = rng.integers(0, len(thresholds), num_samples)
    keep = rng.integers(0, 1 << 32, num_samples, dtype=np.uint32) < thresholds[slots]
    return np.where(keep, slots, aliases[slots]).astype(dtype, copy=False)
