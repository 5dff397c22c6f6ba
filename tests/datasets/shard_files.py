"""Writers of small tar / JSONL shards for the shard tests (and the torchrun worker)."""

from __future__ import annotations

import io
import json
import os
import tarfile


def write_tar(path: str | os.PathLike[str], members: list[tuple[str, bytes]], **kw) -> str:
    """Write ``members`` (name, data) into a tar at ``path`` (mode from the extension)."""
    mode = "w:gz" if str(path).endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(path, mode, **kw) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return os.fspath(path)


def sample_members(keys: list[str]) -> list[tuple[str, bytes]]:
    """Two members per key: ``<key>.txt`` (the key) and ``<key>.cls`` (its length)."""
    out = []
    for k in keys:
        out.append((f"{k}.txt", k.encode()))
        out.append((f"{k}.cls", str(len(k)).encode()))
    return out


def write_tar_shards(root: str | os.PathLike[str], sizes: list[int], prefix: str = "shard") -> list[str]:
    """Shards ``<prefix>-000.tar``... with ``sizes[i]`` samples, keys ``s<i>/<j>``; returns all keys."""
    keys_all = []
    for i, n in enumerate(sizes):
        keys = [f"s{i:03d}/{j:05d}" for j in range(n)]
        write_tar(os.path.join(root, f"{prefix}-{i:03d}.tar"), sample_members(keys))
        keys_all += keys
    return keys_all


def write_jsonl(path: str | os.PathLike[str], rows: list, extra_lines: tuple[str, ...] = ()) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return os.fspath(path)
