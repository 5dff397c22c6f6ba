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
from one sequential stream per epoch, chunk shuffles by chunk id, a pass by
(class, pass), a segment of a pass by (class, pass, segment). Resuming at
position ``k`` therefore replays only the compositions of the chunks before ``k``
(one small draw per chunk) and regenerates the one pass segment each class is in:
no index before ``k`` is generated.

Passes of a large class are generated without a whole-class shuffle (a cache miss
per item): the members are cut into blocks that are permuted in cache, and the
pass is a sequence of segments, segment ``s`` taking from each block the count a
sequential multivariate hypergeometric draw gives (the block-by-segment table of a
uniform permutation), then shuffled; so the pass is an exactly uniform order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from dataforge._rng import mix_seed
from dataforge.samplers.functional import block_permute, multivariate_hypergeometric, subset_mask

_COMPOSITION, _CHUNK, _PASS, _SEGMENT, _GROUP = 1, 2, 3, 4, 5  # generator tags
_PIECE = 1 << 20  # members copied per step
_MAX_BLOCKS = 1024  # blocks per large class: the block-by-segment table has at most 2^20 cells


def keyed_rng(*parts: int) -> np.random.Generator:
    """A numpy generator seeded by a mix of ``parts`` (equal on every rank)."""
    return np.random.Generator(np.random.PCG64(mix_seed(*parts)))


class ClassStream:
    """One class's members in passes, addressable by position (see NOTE [streamed quota epoch]).

    Args:
        members: the class's dataset indices (read only).
        work: a writable array of the same length (a large class's permuted blocks).
        key: seed parts naming this class in this epoch.
        quota: items of the stream in this epoch.
        per_chunk: expected items this class places per chunk; a small class
            generates enough passes at once to cover it.
        block: largest class generated as whole passes; also the smallest block.

    A large class's last pass, when the quota cuts it short to ``r`` members, is a
    uniform ``r``-subset (NOTE [subset by marking]: a byte and under one cheap draw
    per member) put in uniform order the same way, so no permutation of all the
    members is made.
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
            self.num_blocks = -(-n // self.block)
            self.sizes = self._block_sizes(n)
            self.last_pass = (quota - 1) // n
            self.last_sizes = self._block_sizes(quota - self.last_pass * n)
        self._pass = -1
        self._cursors = np.empty((0, 0), np.int64)
        self._table = np.empty((0, 0), np.int64)
        self._piece_id, self._buf = -1, np.empty(0, members.dtype)
        self._lo = self._hi = 0  # stream positions the current piece covers
        self.pos = 0

    def _block_sizes(self, length: int) -> np.ndarray:
        sizes = np.full(-(-length // self.block), self.block, np.int64)
        sizes[-1] = length - self.block * (len(sizes) - 1)
        return sizes

    def _pass_sizes(self, p: int) -> np.ndarray:
        return self.last_sizes if p == self.last_pass else self.sizes

    def _locate(self, pos: int) -> tuple[int, int, int]:
        """(piece id, offset in it, piece length) of stream position ``pos``."""
        if self.small:
            b, off = divmod(pos, self.block)
            return b, off, self.block
        p, o = divmod(pos, self.n)
        s = o // self.block
        return p * self.num_blocks + s, o - s * self.block, int(self._pass_sizes(p)[s])

    def _make_piece(self, b: int) -> np.ndarray:
        if self.small:
            rng = keyed_rng(*self.key, _GROUP, b)
            if self.group == 1:
                return self.members[rng.permutation(self.n)]
            rows = np.broadcast_to(self.members, (self.group, self.n)).copy()
            return rng.permuted(rows, axis=1, out=rows).reshape(-1)
        p, s = divmod(b, self.num_blocks)
        if p != self._pass:
            self._start_pass(p)
        counts = self._table[s]
        starts = np.arange(len(counts), dtype=np.int64) * self.block + self._cursors[s]
        firsts = np.cumsum(counts) - counts
        idx = np.repeat(starts - firsts, counts)
        idx += np.arange(len(idx), dtype=np.int64)
        return self.work[idx[keyed_rng(*self.key, _SEGMENT, p, s).permutation(len(idx))]]

    def _start_pass(self, p: int) -> None:
        rng = keyed_rng(*self.key, _PASS, p)
        sizes = self._pass_sizes(p)
        length = int(sizes.sum())
        src = self.members
        if length < self.n:  # a pass cut short: a uniform subset of the members first
            mask = subset_mask(self.n, length, rng)
            a = 0
            for s in range(0, self.n, _PIECE):
                pick = np.compress(mask[s : s + _PIECE], self.members[s : s + _PIECE])  # no mispredicts
                self.work[a : a + len(pick)] = pick
                a += len(pick)
            del mask
            src = self.work[:length]
        block_permute(src, self.work[:length], self.block, rng)
        remaining = sizes.copy()
        table = np.empty((len(sizes), len(sizes)), np.int64)
        for s, size in enumerate(sizes.tolist()):  # segment s has the size of block s
            table[s] = multivariate_hypergeometric(rng, remaining, size)
            remaining -= table[s]
        self._table = table
        self._cursors = np.cumsum(table, axis=0) - table
        self._pass = p

    def fill(self, out: np.ndarray) -> None:
        """Write the next ``len(out)`` items of the stream into ``out``."""
        pos, k = self.pos, len(out)
        lo = self._lo
        if lo <= pos and pos + k <= self._hi:  # the usual case: one slice of the current piece
            out[:] = self._buf[pos - lo : pos - lo + k]
            self.pos = pos + k
            return
        a = 0
        while a < k:
            b, off, length = self._locate(self.pos)
            if self._piece_id != b:
                self._piece_id, self._buf = b, self._make_piece(b)
                self._lo = self.pos - off
                self._hi = self._lo + length
            take = min(k - a, length - off)
            out[a : a + take] = self._buf[off : off + take]
            a += take
            self.pos += take


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

    def chunks(self, start: int = 0) -> Iterator[np.ndarray]:
        """The order from position ``start`` on; skipped chunks cost one small draw each."""
        comp_rng = keyed_rng(*self.key, _COMPOSITION)
        remaining = self.quotas.copy()
        first = start // self.chunk
        for _ in range(first):  # replay compositions only
            remaining -= multivariate_hypergeometric(comp_rng, remaining, min(self.chunk, int(remaining.sum())))
        for stream, done in zip(self.streams, (self.quotas - remaining).tolist()):
            stream.pos = done
        streams = self.streams
        for j in range(first, -(-self.total // self.chunk)):
            m = min(self.chunk, self.total - j * self.chunk)
            comp = multivariate_hypergeometric(comp_rng, remaining, m)
            remaining -= comp
            content = np.empty(m, self.dtype)
            a = 0
            nz = np.flatnonzero(comp)
            for i, k in zip(nz.tolist(), comp[nz].tolist()):
                streams[i].fill(content[a : a + k])
                a += k
            out = content[keyed_rng(*self.key, _CHUNK, j).permutation(m)]
            yield out[start - j * self.chunk :] if j == first else out
