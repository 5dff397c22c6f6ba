"""One epoch of exact per-class quotas, generated lazily, chunk by chunk.

NOTE [streamed quota epoch]: an oversampled epoch can be 20x the data set, so it
is never materialised. Positions are cut into chunks; chunk ``j``'s class
composition is a multivariate hypergeometric draw over the quotas not yet placed
(exactly the composition a uniform shuffle of the whole epoch would give it), then
each class fills its share from its *stream* and the chunk is shuffled. A class's
stream is passes over its members, each pass a uniformly random order of all of
them, cut short by the quota (the last pass is a uniform random subset): a member
appears once per pass, so ``f`` or ``f + 1`` times for a quota between ``f`` and
``f + 1`` times the class's size. Memory: the class
grouping plus one work copy of it (4 bytes per label each below 2^31 labels)
plus O(chunk).

Every random draw comes from a generator keyed by what it decides: compositions
from one sequential stream per epoch, chunk shuffles by chunk id, a pass (and what
each chunk takes of it) by (class, pass). Resuming at position ``k`` therefore
replays only the compositions of the chunks before ``k`` (one small draw per chunk)
and, for a class in the middle of a large pass, that pass's per-chunk block counts
(one small draw per chunk it spans): no index before ``k`` is generated.

A large class's pass is generated without a whole-class shuffle (a cache miss per
item): the members are cut into blocks that are each permuted in cache, and each
chunk takes its share ``k`` of the pass as a sequential multivariate hypergeometric
draw over the members each block has left (the next ones of each block's order):
a uniform ``k``-subset of what the pass has left. The chunk shuffle then orders it,
so the pass is an exactly uniform order with one permutation per member besides
the chunk's (NOTE [chunk takes a subset]).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import cast

import numpy as np

from dataforge._rng import mix_seed
from dataforge.samplers.draws import HG_LIMIT, block_sample, multivariate_hypergeometric

_COMPOSITION, _CHUNK, _PASS, _GROUP = 1, 2, 3, 5  # generator tags
_MAX_BLOCKS = 1024  # blocks per large class: each chunk's draw over them is O(blocks)


def keyed_rng(*parts: int) -> np.random.Generator:
    """A numpy generator seeded by a mix of ``parts`` (equal on every rank)."""
    return np.random.Generator(np.random.PCG64(mix_seed(*parts)))


_SCRATCH = threading.local()
_MASK64 = (1 << 64) - 1


def scratch_rng(*parts: int) -> np.random.Generator:
    """A generator keyed by ``parts`` like :func:`keyed_rng`, valid until the next call
    in this thread: draw from it at once and drop it.

    NOTE [scratch generator]: seeding a new PCG64 (a SeedSequence and a new object)
    costs about 20 us, which dominated small classes' passes with thousands of
    classes. This sets one per-thread generator's 128-bit state and increment from
    splitmix64 mixes of ``parts`` instead (a few us); the draws are as well mixed.
    """
    g = getattr(_SCRATCH, "generator", None)
    if g is None:
        g = _SCRATCH.generator = np.random.Generator(np.random.PCG64(0))
    h = mix_seed(*parts)
    z = (h + 0x9E3779B97F4A7C15) & _MASK64  # one more splitmix64 step: the low word
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    lo = z ^ (z >> 31)
    g.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (h << 64) | lo, "inc": (lo << 1) | 1},
        "has_uint32": 0,
        "uinteger": 0,
    }
    return g


class ClassStream:
    """One class's members in passes (see NOTE [streamed quota epoch]).

    Args:
        members: the class's dataset indices (read only).
        work: a writable array of the same length (a large class's permuted blocks).
        key: seed parts naming this class in this epoch.
        quota: items of the stream in this epoch.
        per_chunk: expected items this class places per chunk; a small class
            generates enough passes at once to cover it.
        block: largest class generated as whole passes; also the smallest block.

    A small class's stream is addressable by position (pieces of whole passes). A
    large class's pass is handed out as subsets (NOTE [chunk takes a subset]): what a
    ``fill`` takes depends on the sizes of the fills before it in the pass, so
    ``seek`` says when the caller must replay them with ``skip``.

    A large class's last pass, when the quota cuts it short to ``r`` members, is a
    uniform ``r``-subset drawn block by block (NOTE [pass cut short]) and handed out
    the same way, so no permutation of all the members is made.
    """

    def __init__(
        self,
        members: np.ndarray,
        work: np.ndarray,
        key: tuple[int, ...],
        quota: int,
        per_chunk: float,
        block: int,
    ) -> None:
        self.members, self.work, self.key = members, work, key
        n = len(members)
        self.n = n
        self.small = n <= block
        if self.small:  # whole passes, ``group`` of them per generated piece
            self.group = max(1, math.ceil(per_chunk / n))
            self.block = self.group * n
        else:
            self.block = max(block, 1 << (math.ceil(n / _MAX_BLOCKS) - 1).bit_length())
            self.last_pass = (quota - 1) // n
            self.last_len = quota - self.last_pass * n
        self._pass = -1
        self._rng: np.random.Generator | None = None
        self._next = np.empty(0, np.int64)  # per block: work index of its next member
        self._left = np.empty(0, np.int64)  # per block: members the pass has not handed out
        self._pass_left = 0
        self._piece_id, self._buf = -1, np.empty(0, members.dtype)
        self._lo = self._hi = 0  # stream positions the current piece covers
        self.pos = 0

    def _make_piece(self, b: int) -> np.ndarray:
        rng = scratch_rng(*self.key, _GROUP, b)
        if self.group == 1:
            return self.members[rng.permutation(self.n)]
        rows = np.broadcast_to(self.members, (self.group, self.n)).copy()
        return rng.permuted(rows, axis=1, out=rows).reshape(-1)

    def write_pass(self, p: int) -> None:
        """A one-pass-per-piece small class's pass ``p`` into its work region, where
        :class:`QuotaEpoch` reads it in place (NOTE [small classes in place])."""
        perm = scratch_rng(*self.key, _GROUP, p).permutation(self.n)
        np.take(self.members, perm, out=self.work)

    def _start_pass(self, p: int) -> None:
        rng = keyed_rng(*self.key, _PASS, p)
        length = self.last_len if p == self.last_pass else self.n
        firsts = np.arange(0, self.n, self.block, dtype=np.int64)
        sizes = np.minimum(self.n - firsts, self.block)
        if length < self.n:
            # NOTE [pass cut short]: a uniform ``length``-subset of the members has
            # multivariate hypergeometric counts per block and, given them, a uniform
            # subset of each block; each block's subset is drawn in cache (O(block) at
            # most), so the cost follows the blocks' draws, not a mask or permutation
            # of all the members. The blocks' subsets are the pass's blocks.
            sizes = multivariate_hypergeometric(rng, sizes, length)
            firsts = np.cumsum(sizes) - sizes
        block_sample(self.members, sizes, self.block, self.work, rng)
        self._next, self._left = firsts, sizes.copy()
        self._rng, self._pass, self._pass_left = rng, p, length

    def _take(self, k: int, out: np.ndarray | None) -> None:
        """Hand out ``k`` members of the current pass (into ``out`` unless replaying).

        NOTE [chunk takes a subset]: the counts per block are a multivariate
        hypergeometric draw over the members each block has left, and each block's
        left members are in uniform order, so the ``k`` taken are a uniform subset of
        what the pass has left; their order does not matter (the chunk is shuffled).
        """
        rng = cast(np.random.Generator, self._rng)
        if k == self._pass_left:
            counts = self._left.copy()
        elif self._pass_left < HG_LIMIT:  # numpy's draw directly: a fill's fixed cost is most of it
            counts = rng.multivariate_hypergeometric(self._left, k, method="marginals")
        else:
            counts = multivariate_hypergeometric(rng, self._left, k)
        if out is not None:
            firsts = np.cumsum(counts) - counts
            idx = np.repeat(self._next - firsts, counts)
            idx += np.arange(k, dtype=np.int64)
            np.take(self.work, idx, out=out)
        self._next += counts
        self._left -= counts
        self._pass_left -= k

    def seek(self, pos: int) -> int | None:
        """Position the stream at ``pos`` (what earlier chunks placed); returns where the
        current pass began when the fills from there to ``pos`` must be replayed with
        :meth:`skip`, else ``None``."""
        self.pos = pos
        if self.small:
            return None
        p, o = divmod(pos, self.n)
        if o == 0:  # at a pass boundary: the next fill starts pass p
            self._pass, self._pass_left = p - 1, 0
            return None
        self._start_pass(p)
        return p * self.n

    def skip(self, k: int) -> None:
        """Replay a fill of ``k`` members of the current pass (after :meth:`seek`)."""
        self._take(k, None)

    def fill(self, out: np.ndarray) -> None:
        """Write the next ``len(out)`` items of the stream into ``out``."""
        pos, k = self.pos, len(out)
        self.pos = pos + k
        if not self.small:
            a = 0
            while a < k:
                if self._pass_left == 0:
                    self._start_pass(self._pass + 1)
                t = min(k - a, self._pass_left)
                self._take(t, out[a : a + t])
                a += t
            return
        lo = self._lo
        if lo <= pos and pos + k <= self._hi:  # the usual case: one slice of the current piece
            out[:] = self._buf[pos - lo : pos - lo + k]
            return
        a = 0
        while a < k:
            b, off = divmod(pos + a, self.block)
            if self._piece_id != b:
                self._piece_id, self._buf = b, self._make_piece(b)
                self._lo = b * self.block
                self._hi = self._lo + self.block
            take = min(k - a, self.block - off)
            out[a : a + take] = self._buf[off : off + take]
            a += take


class QuotaEpoch:
    """The global order of one epoch with exact per-class quotas, as chunks.

    Args:
        grouped: dataset indices grouped by class (class ``c`` is
            ``grouped[offsets[c]:offsets[c + 1]]``).
        offsets: group boundaries, one more than the number of classes.
        quotas: items of each class in the epoch.
        key: seed parts of this epoch (for example ``(seed, epoch)``).
        work: a writable array like ``grouped`` (scratch for large classes).
        chunk: positions per chunk.
        block: see :class:`ClassStream`.

    Example:
        >>> g, off = np.array([0, 1, 2, 3, 4]), np.array([0, 3, 5])
        >>> e = QuotaEpoch(g, off, np.array([3, 6]), (0, 0), np.empty(5, np.int64), chunk=4)
        >>> order = np.concatenate(list(e.chunks(0)))
        >>> sorted(order.tolist())
        [0, 1, 2, 3, 3, 3, 4, 4, 4]
    """

    def __init__(
        self,
        grouped: np.ndarray,
        offsets: np.ndarray,
        quotas: np.ndarray,
        key: tuple[int, ...],
        work: np.ndarray,
        *,
        chunk: int = 1 << 18,
        block: int = 1 << 16,
    ) -> None:
        self.classes = np.flatnonzero(quotas)
        self.quotas = quotas[self.classes].astype(np.int64)
        self.total = int(self.quotas.sum())
        self.key, self.chunk, self.dtype = key, chunk, grouped.dtype
        self.streams = [
            ClassStream(
                grouped[offsets[c] : offsets[c + 1]],
                work[offsets[c] : offsets[c + 1]],
                (*key, c),
                q,
                chunk * q / max(self.total, 1),
                block,
            )
            for c, q in zip(self.classes.tolist(), self.quotas.tolist())
        ]
        # NOTE [small classes in place]: a chunk costs a Python step per class it draws
        # from, which dominates with thousands of classes. A small class whose piece is
        # one pass (``group == 1``) keeps its current pass in its own region of
        # ``work`` instead, so every such class's share of a chunk is one vectorised
        # gather; the stream is the same (pass ``p`` is piece ``p``).
        self.work = work
        self._vec = np.asarray(
            [i for i, st in enumerate(self.streams) if st.small and st.group == 1], np.int64
        )
        self._vec_off = offsets[self.classes[self._vec]].astype(np.int64)
        self._vec_n = np.asarray([self.streams[i].n for i in self._vec.tolist()], np.int64)
        self._rest = np.setdiff1d(np.arange(len(self.streams)), self._vec)
        self._vec_pos = np.zeros(len(self._vec), np.int64)
        self._vec_pass = np.full(len(self._vec), -1, np.int64)

    def chunks(self, start: int = 0) -> Iterator[np.ndarray]:
        """The order from position ``start`` on; skipped chunks cost one small draw each
        (and one per class in the middle of a large pass)."""
        first = start // self.chunk
        comp_rng = self._replay(first)
        remaining = self.quotas - np.asarray([s.pos for s in self.streams], np.int64)
        streams = self.streams
        for j in range(first, -(-self.total // self.chunk)):
            m = min(self.chunk, self.total - j * self.chunk)
            comp = multivariate_hypergeometric(comp_rng, remaining, m)
            remaining -= comp
            content = np.empty(m, self.dtype)
            a = self._fill_in_place(comp[self._vec], content)
            rest = self._rest[comp[self._rest] > 0]
            for i, k in zip(rest.tolist(), comp[rest].tolist()):
                streams[i].fill(content[a : a + k])
                a += k
            # shuffled in place: no index array of the chunk and no gather through it
            scratch_rng(*self.key, _CHUNK, j).shuffle(content)
            yield content[start - j * self.chunk :] if j == first else content

    def _fill_in_place(self, counts: np.ndarray, content: np.ndarray) -> int:
        """Write the in-place classes' shares ``counts`` (NOTE [small classes in place])
        to the start of ``content``; returns how many items were written."""
        act = np.flatnonzero(counts)
        if len(act) == 0:
            return 0
        k, pos, n = counts[act], self._vec_pos[act], self._vec_n[act]
        p = pos // n
        within = pos - p * n
        for t in np.flatnonzero(p != self._vec_pass[act]).tolist():  # a pass not yet written
            self._write_pass(int(act[t]), int(p[t]))
        simple = k <= n - within
        ks = k[simple]
        ends = np.cumsum(ks)
        idx = np.repeat(self._vec_off[act[simple]] + within[simple] - (ends - ks), ks)
        idx += np.arange(len(idx), dtype=np.int64)
        a = len(idx)
        np.take(self.work, idx, out=content[:a])
        for t in np.flatnonzero(~simple).tolist():  # shares that run into the next pass(es)
            v, left, at = int(act[t]), int(k[t]), int(pos[t])
            size, off = int(n[t]), int(self._vec_off[act[t]])
            while left:
                q, w = divmod(at, size)
                if self._vec_pass[v] != q:
                    self._write_pass(v, q)
                take = min(left, size - w)
                content[a : a + take] = self.work[off + w : off + w + take]
                a, at, left = a + take, at + take, left - take
        self._vec_pos[act] += k
        return a

    def _write_pass(self, v: int, p: int) -> None:
        self.streams[int(self._vec[v])].write_pass(p)
        self._vec_pass[v] = p

    def _compositions(self, rng: np.random.Generator, count: int) -> Iterator[np.ndarray]:
        """The class compositions of the first ``count`` chunks, drawn from ``rng`` (a
        fresh composition generator); after them its next draw is chunk ``count``'s."""
        remaining = self.quotas.copy()
        for j in range(count):
            comp = multivariate_hypergeometric(rng, remaining, min(self.chunk, self.total - j * self.chunk))
            remaining -= comp
            yield comp

    def _replay(self, first: int) -> np.random.Generator:
        """Position every stream at chunk ``first``; returns the composition generator
        ready for chunk ``first``. A class in the middle of a large pass replays that
        pass's fills (their sizes come from the compositions), so a second replay runs."""
        done = np.zeros(len(self.streams), np.int64)
        rng = keyed_rng(*self.key, _COMPOSITION)
        for comp in self._compositions(rng, first):
            done += comp
        pass_starts = [s.seek(d) for s, d in zip(self.streams, done.tolist())]
        self._vec_pos = done[self._vec]
        self._vec_pass = np.full(len(self._vec), -1, np.int64)
        mid = np.asarray([i for i, p in enumerate(pass_starts) if p is not None], np.int64)
        if len(mid):
            since = np.asarray([pass_starts[i] for i in mid.tolist()], np.int64)
            pos = np.zeros(len(mid), np.int64)
            for comp in self._compositions(keyed_rng(*self.key, _COMPOSITION), first):
                hi = pos + comp[mid]
                lo = np.maximum(pos, since)
                for i in np.flatnonzero(hi > lo).tolist():
                    self.streams[int(mid[i])].skip(int(hi[i] - lo[i]))
                pos = hi
        return rng
