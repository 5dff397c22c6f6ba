"""Streaming tar reader for webdataset-style shards: samples grouped by key, never extracted.

NOTE [own header loop]: ``tarfile``'s stream mode (``"r|*"``) stops SILENTLY at a
corrupt header or at a file cut at a member boundary: a truncated shard looks
like a shorter, valid one. Shards are the unit of data loss, so this module walks
the headers itself (each 512-byte header parsed and checksum-verified by the
documented ``tarfile.TarInfo.frombuf``; pax and GNU long names handled here) and
reports a stream that ends without the end-of-archive zero block, a short member,
or an invalid header as :class:`ShardError`. Nothing is written to disk, link
members are ignored, and member bytes are returned as ``bytes`` (never unpickled).

NOTE [bounded members]: a header's size field is untrusted (base-256 fields hold up
to 2**95, pax ``size=`` any text). A size is checked before anything is allocated:
a non-negative decimal, at most ``max_member_bytes`` (default ``MAX_MEMBER_BYTES``,
256 MiB; extended headers at most ``MAX_HEADER_BYTES``, 1 MiB) and, in a local file,
at most what the file still holds. Data is read in chunks of at most ``_CHUNK``,
so a stream that cannot tell its remaining length holds only the bytes it has.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import IO, Any

from dataforge.datasets.records import short

BLOCK = 512
MAX_MEMBER_BYTES = 256 << 20
MAX_HEADER_BYTES = 1 << 20
_CHUNK = 16 << 20
_DECIMAL = re.compile(r"[0-9]{1,20}")
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.GNUTYPE_LONGLINK, tarfile.XGLTYPE)
# webdataset's key/extension split: key = path up to the first dot of the basename
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


class ShardError(RuntimeError):
    """A shard that cannot be read: truncated, corrupt, or unreachable.

    The message names the shard URL and the member (tar) or line (JSONL).

    Attributes:
        url: the shard, when known.
        member: the tar member whose header was read when the damage was met, if any.
        offset: the byte offset of that member's header in the (decompressed) tar.
        line: the 1-based line of a JSONL shard.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        member: str | None = None,
        offset: int | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.url, self.member, self.offset, self.line = url, member, offset, line

    def __reduce__(self) -> Any:
        return _rebuild, (type(self), str(self), self.url, self.member, self.offset, self.line)


def _rebuild(cls: type[ShardError], message: str, *pos: Any) -> ShardError:
    return cls(message, url=pos[0], member=pos[1], offset=pos[2], line=pos[3])


def split_key(name: str) -> tuple[str, str] | None:
    """``"a/b/000123.seg.png" -> ("a/b/000123", "seg.png")``; ``None`` without an extension."""
    m = _KEY_EXT.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


def _read_exact(f: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes (fewer at the end of ``f``), read in chunks of at most ``_CHUNK``."""
    chunks, left = [], n
    while left > 0:
        b = f.read(min(left, _CHUNK))
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def _seekable(f: Any) -> bool:
    # only real local files: some remote file objects claim seekable() and then refuse
    return isinstance(f, (io.BufferedReader, io.FileIO, io.BytesIO)) and f.seekable()


def _skip(f: IO[bytes], n: int) -> int:
    """Skip ``n`` bytes (by seeking when ``f`` can); returns how many could be skipped."""
    if n <= 0:
        return 0
    if _seekable(f):
        pos = f.tell()
        end = f.seek(0, 2)
        return f.seek(min(pos + n, end)) - pos
    left = n
    while left > 0:
        b = f.read(min(left, 1 << 20))
        if not b:
            break
        left -= len(b)
    return n - left


class _Prepend:
    """A read-only stream of ``head`` followed by ``f`` (to sniff compression without seeking)."""

    def __init__(self, head: bytes, f: IO[bytes]) -> None:
        self._head, self._f = head, f

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0:
                out, self._head = self._head + self._f.read(), b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._f.read(n)

    def readable(self) -> bool:
        return True


# NOTE [expansion bound]: streaming bounds the memory of a compressed shard, not its time: a
# shard that expands 1000x costs CPU in proportion. Real JSONL/CSV compress 3-20x and JPEG tars
# about 1x, while bombs expand 1000x and more, so a shard is refused once its decompressed output
# passes EXPANSION_FLOOR (small, very compressible files are never refused) AND the ratio
# decompressed/compressed passes MAX_EXPANSION.
MAX_EXPANSION = 200.0
EXPANSION_FLOOR = 16 << 20


class _CountingReader:
    """``f.read`` counting the (compressed) bytes consumed."""

    def __init__(self, f: Any) -> None:
        self._f, self.consumed = f, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.consumed += len(data)
        return data


class _ExpansionBound(io.RawIOBase):
    """The decompressed bytes of ``inner``, raising :class:`ShardError` past the expansion bound."""

    def __init__(self, inner: Any, raw: _CountingReader, url: str, max_expansion: float) -> None:
        self._inner, self._raw, self._url, self._max = inner, raw, url, max_expansion
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._inner.readinto(b)
        self.produced += n
        if self.produced > EXPANSION_FLOOR:
            ratio = self.produced / max(self._raw.consumed, 1)
            if ratio > self._max:
                raise ShardError(
                    f"shard {self._url!r} looks like a decompression bomb: {self.produced} bytes "
                    f"decompressed from {self._raw.consumed} compressed bytes (ratio {ratio:.0f} > "
                    f"max_expansion={self._max:g}); if it is genuine, pass a larger "
                    f"max_expansion= to from_shards (or to TableDataset/TextDataset.from_file), or "
                    f"max_expansion=None to read it unbounded",
                    url=self._url,
                )
        return n


def check_max_expansion(value: object) -> float | None:
    """``value`` as the ``max_expansion`` bound: a positive number or None (no bound)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"max_expansion must be a positive number or None, got {value!r}")
    return float(value)


def decompressed(f: IO[bytes], url: str = "", max_expansion: float | None = MAX_EXPANSION) -> IO[bytes]:
    """``f`` itself, or a decompressing stream when it starts with a gzip / bz2 / xz magic,
    bounded by ``max_expansion`` (NOTE [expansion bound]; None: unbounded)."""
    head = _read_exact(f, 6)
    if _seekable(f):
        f.seek(-len(head), 1)
        raw: Any = f
    else:
        raw = _Prepend(head, f)
    counted: Any = _CountingReader(raw)  # a readable file object to the decompressors
    if head.startswith(b"\x1f\x8b"):
        inner: Any = gzip.GzipFile(fileobj=counted, mode="rb")  # noqa: SIM115
    elif head.startswith(b"BZh"):
        inner = bz2.BZ2File(counted, mode="rb")  # noqa: SIM115
    elif head.startswith(b"\xfd7zXZ\x00"):
        inner = lzma.LZMAFile(counted, mode="rb")  # noqa: SIM115
    else:
        return raw  # type: ignore[no-any-return]
    if max_expansion is None:
        return inner  # type: ignore[no-any-return]
    return io.BufferedReader(_ExpansionBound(inner, counted, url, max_expansion))


def _end(f: IO[bytes]) -> int | None:
    """The length of a local file, None for a stream that cannot tell."""
    if not _seekable(f):
        return None
    pos = f.tell()
    end = f.seek(0, 2)
    f.seek(pos)
    return end


def _pax_records(data: bytes, err: Callable[[str], ShardError]) -> dict[str, str]:
    """``"<length> <key>=<value>\\n"`` records; any other layout is a corrupt header."""
    out, pos = {}, 0
    while pos < len(data):
        sp = data.find(b" ", pos, pos + 21)
        digits = data[pos:sp] if sp > pos else b""
        length = int(digits) if digits.isdigit() else 0
        if length <= sp - pos + 1 or pos + length > len(data) or data[pos + length - 1] != 0x0A:
            raise err(f"corrupt pax header (record at byte {pos})")
        key, eq, value = data[sp + 1 : pos + length - 1].partition(b"=")
        if not eq:
            raise err(f"corrupt pax header (record at byte {pos} has no '=')")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _member_size(info: tarfile.TarInfo, pax: dict[str, str], limit: int, err: Callable[[str], ShardError]) -> int:
    """The member's data size, checked before any of it is read (NOTE [bounded members])."""
    if "size" in pax:
        text = pax["size"]
        if not _DECIMAL.fullmatch(text):
            raise err(f"pax header's size {text[:30]!r} is not a decimal number of bytes")
        size = int(text)
    else:
        size = info.size
    what = "extended header" if info.type in _EXTENDED else "member"
    if size < 0:
        raise err(f"{what} declares a negative size ({size})")
    if size > limit:
        raise err(
            f"{what} declares {size} bytes, over max_member_bytes={limit}; pass a larger "
            "from_shards(max_member_bytes=...) if such members are expected"
            if what == "member" else f"{what} declares {size} bytes, over the limit of {limit}"
        )
    return size


def iter_members(
    f: IO[bytes],
    url: str,
    *,
    read: bool | Callable[[str], bool] = True,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_expansion: float | None = MAX_EXPANSION,
) -> Iterator[tuple[str, bytes | None]]:
    """Yield ``(name, data)`` of each regular file member.

    ``data`` is None when not ``read``; ``read`` may be a ``name -> bool`` callback,
    asked before each member's data is read (skipped data of local files is seeked over).
    A member over ``max_member_bytes`` is an error (NOTE [bounded members]); so is a
    compressed shard past ``max_expansion`` (NOTE [expansion bound]).

    Raises:
        ShardError: naming ``url`` and the member, on any truncation or corruption;
            its ``member`` / ``offset`` say which header was read last.
    """
    state: dict[str, Any] = {"last": "<start of archive>", "member": None, "offset": None}
    try:
        yield from _members(decompressed(f, url, max_expansion), url, read, state, max_member_bytes)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:  # decompression / I/O
        raise ShardError(
            f"cannot read shard {url!r} after member {short(state['last'], 200)}: {type(e).__name__}: {e}",
            url=url, member=state["member"], offset=state["offset"],
        ) from e


# member names in messages are cut by ``short``: a pax path may be a megabyte long
def _header_error(url: str, last: str, at: int, msg: str) -> ShardError:
    return ShardError(f"{msg} in shard {url!r} after member {short(last, 200)} (offset {at})", url=url, offset=at)


def _member_error(url: str, name: str, at: int, msg: str) -> ShardError:
    return ShardError(
        f"member {short(name, 200)} at offset {at} of shard {url!r}: {msg}", url=url, member=name, offset=at
    )


def _truncated(url: str, name: str, at: int, left: int | None = None) -> ShardError:
    where = "inside its data" if left is None else f"{left} bytes into its data"
    return ShardError(
        f"truncated member {short(name, 200)} at offset {at} of shard {url!r} (the shard ends {where})",
        url=url, member=name, offset=at,
    )


def _members(
    f: IO[bytes],
    url: str,
    read: bool | Callable[[str], bool],
    state: dict[str, Any],
    max_member_bytes: int,
) -> Iterator[tuple[str, bytes | None]]:
    long_name: str | None = None
    pax: dict[str, str] = {}
    at = 0  # offset of the current header in the decompressed stream
    end = _end(f)
    while True:
        state["member"], state["offset"] = None, at
        header_err = partial(_header_error, url, state["last"], at)
        buf = _read_exact(f, BLOCK)
        if not buf:
            raise header_err("shard ended without the end-of-archive marker (truncated?)")
        if buf.count(0) == BLOCK:
            return  # end-of-archive zero block; anything after it is padding
        try:
            info = tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise header_err(f"invalid tar header ({e})") from None
        left = None if end is None else end - f.tell()
        if info.type in _EXTENDED:
            size = _member_size(info, {}, MAX_HEADER_BYTES, header_err)
            padded = -(-size // BLOCK) * BLOCK
            data = _read_exact(f, padded) if left is None or padded <= left else b""
            if len(data) < padded:
                raise header_err("truncated extended header")
            if info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = data[:size].rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif info.type == tarfile.XHDTYPE:
                pax = _pax_records(data[:size], header_err)
            at += BLOCK + padded
            continue  # longlink / global headers: ignored
        name = long_name or pax.get("path") or info.name
        state["member"] = name
        member_err = partial(_member_error, url, name, at)
        size = _member_size(info, pax, max_member_bytes, member_err)
        if left is not None and size > left:  # refused before reading (NOTE [bounded members])
            raise _truncated(url, name, at, left)
        padded = -(-size // BLOCK) * BLOCK
        long_name, pax = None, {}
        if info.type in _FILE_TYPES:
            member: bytes | None = None
            if read is True or (read is not False and read(name)):
                member = _read_exact(f, size)
                ok = len(member) == size and _skip(f, padded - size) == padded - size
            else:
                ok = _skip(f, padded) == padded
            if not ok:
                raise _truncated(url, name, at)
            state["last"] = name
            yield name, member
        elif _skip(f, padded) != padded:  # directories, links, devices: skipped
            raise _truncated(url, name, at)
        at += BLOCK + padded


def iter_samples(
    f: IO[bytes],
    url: str,
    *,
    read: bool = True,
    keep: Callable[[], bool] | None = None,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_expansion: float | None = MAX_EXPANSION,
) -> Iterator[dict[str, Any]]:
    """Group consecutive members with the same key into webdataset samples.

    Each sample is ``{"__key__": key, "__url__": url, "<ext>": bytes, ...}``
    (``ext`` lower-cased; members without an extension are ignored). ``keep``, when
    given, is called once per sample in order, before its data is read: a sample it
    rejects is skipped without reading its members (how a consumer that splits by
    sample passes over the others' samples).

    NOTE [complete before damage]: a sample cut by an error is not yielded. The
    sample assembled when the error is met is complete, and yielded before the error
    is raised, when the damaged member's header names another key: members of one
    sample are consecutive. Damage before a readable header (a cut or corrupt header)
    leaves that unknown, so the sample is dropped.
    """
    sel_key: str | None = None
    sel_want = True

    def want(name: str) -> bool:
        nonlocal sel_key, sel_want
        ke = split_key(name)
        if ke is None:
            return False
        if ke[0] != sel_key:
            sel_key, sel_want = ke[0], keep() if keep is not None else True
        return read and sel_want

    current: dict[str, Any] | None = None
    wanted = True
    members = iter_members(f, url, read=want if keep is not None else read, max_member_bytes=max_member_bytes,
                           max_expansion=max_expansion)
    try:
        for name, data in members:
            ke = split_key(name)
            if ke is None:
                continue
            key, ext = ke
            if current is None or current["__key__"] != key:
                if current is not None and wanted:
                    yield current
                current, wanted = {"__key__": key, "__url__": url}, keep is None or sel_want
            if ext in current:
                raise ShardError(
                    f"duplicate member {short(name, 200)} (extension {short(ext, 60)}) in shard {url!r}",
                    url=url, member=name,
                )
            current[ext] = data
    except ShardError as e:
        damaged = split_key(e.member) if e.member is not None and e.url == url else None
        if current is not None and wanted and damaged is not None and damaged[0] != current["__key__"]:
            yield current  # NOTE [complete before damage]
        raise
    if current is not None and wanted:
        yield current
