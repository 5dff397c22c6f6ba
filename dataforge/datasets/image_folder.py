"""``ImageFolder``: images laid out as ``root/<class>/<image>``.

The scan is sorted, so ids and order are deterministic across machines. File
paths live in a :class:`~dataforge.datasets.storage.StringStorage` (relative to
``root``) and labels in an int64 array, so a million-image folder costs a few
tens of MB, does not grow in forked workers and pickles cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dataforge.datasets.map_style import MapDataset
from dataforge.datasets.storage import StringStorage
from dataforge.transforms.decode import decode_image
from dataforge.transforms.image_file import read_file

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _check_extensions(extensions: Any) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    if not isinstance(extensions, (tuple, list)) or not extensions:
        raise TypeError(f"extensions must be a non-empty tuple of str such as ('.jpg',), got {extensions!r}")
    out = []
    for ext in extensions:
        if not isinstance(ext, str) or not ext.startswith(".") or len(ext) < 2:
            raise ValueError(f"extensions must be suffixes with a leading dot such as '.jpg', got {ext!r}")
        out.append(ext.lower())
    return tuple(out)


def _scan(root: str, folder: str, extensions: tuple[str, ...]) -> list[str]:
    """Image files under ``root/folder`` (recursively, hidden entries skipped), sorted,
    as paths relative to ``root``: each folder's files, then its sub-folders."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder), followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root) + os.sep  # once per folder, not per file
        found.extend(
            rel + name
            for name in sorted(filenames)
            if not name.startswith(".") and name.lower().endswith(extensions)
        )
    return found


_stage: Callable[..., Any] | None = None


def _import_stage() -> Callable[..., Any]:
    """``dataforge.loading.stages.timed``: the stages the loader's ``stats()`` and the
    doctor report (NOTE [stage timing]), with a count (the samples a batched call
    makes); imported on first use, as the loading package imports this one."""
    global _stage
    from dataforge.loading.stages import timed

    _stage = timed
    return timed


class ImageFolder(MapDataset[dict[str, Any]]):
    """Images in ``root/<class_name>/...``, one class per sub-folder.

    Items are dicts ``{"image": uint8 (C, H, W) tensor, "label": int, "path": str}``.

    Args:
        root: the folder holding one sub-folder per class.
        transform: applied to the image (the tensor, or the bytes when
            ``decode=False``); its result replaces ``"image"``.
        decode: ``True``: decode to a tensor with
            ``dataforge.transforms.decode.decode_image`` (a corrupt file raises an
            error naming it), then transform; ``False``: the raw bytes; ``"auto"``
            (default): as ``True``, except that a transform that decodes by itself
            (``accepts_encoded = True``, such as ``train_transforms``, which decodes
            only its crop) is given the file's path instead, and a batch's paths at
            once (``__getitems__``) when it has a ``call_batch(paths)`` method, as
            the presets do.
        extensions: file suffixes to keep, matched case-insensitively.
        classes: class folder names to use, in id order; default: every
            sub-folder, sorted.

    Example:
        >>> import tempfile, dataforge
        >>> from dataforge.synthetic import make_image_folder
        >>> root = make_image_folder(tempfile.mkdtemp(), num_images=6, num_classes=2,
        ...                          imbalance=2.0, sizes=(16, 24), progress=False)
        >>> ds = dataforge.ImageFolder(root)
        >>> len(ds), ds.classes, ds.labels.tolist()
        (6, ['class_0', 'class_1'], [0, 0, 0, 0, 1, 1])
        >>> item = ds[0]
        >>> item["image"].dtype, item["image"].shape[0], item["label"]
        (torch.uint8, 3, 0)
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        *,
        decode: bool | str = "auto",
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        classes: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path, got {type(root).__name__} {root!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {transform!r}")
        if not isinstance(decode, bool) and decode != "auto":
            raise TypeError(f"decode must be True, False or 'auto', got {decode!r}")
        exts = _check_extensions(extensions)
        root_path = Path(root).expanduser()
        if not root_path.exists():
            raise FileNotFoundError(f"ImageFolder root does not exist: {str(root_path)!r}")
        if not root_path.is_dir():
            raise NotADirectoryError(f"ImageFolder root is not a folder: {str(root_path)!r}")
        class_names = self._classes(root_path, classes)

        paths: list[str] = []
        counts: list[int] = []
        for name in class_names:
            found = _scan(str(root_path), name, exts)
            paths.extend(found)
            counts.append(len(found))
        if not paths:
            raise ValueError(
                f"ImageFolder found no images under {str(root_path)!r}: expected files ending in "
                f"{exts} inside the class folders {class_names[:5]}; check extensions="
            )
        self.root = str(root_path)
        self.transform = transform
        self.decode = decode
        self._pass_path = decode == "auto" and bool(getattr(transform, "accepts_encoded", False))
        self.extensions = exts
        self.classes: list[str] = class_names
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(class_names)}
        self._paths = StringStorage(paths, prefix=self.root + os.sep)
        labels = np.repeat(np.arange(len(class_names), dtype=np.int64), counts)
        labels.setflags(write=False)
        self._labels = labels

    @staticmethod
    def _classes(root: Path, classes: Sequence[str] | None) -> list[str]:
        if classes is None:
            names = sorted(
                e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
            )
            if not names:
                raise ValueError(
                    f"ImageFolder found no class folders in {str(root)!r}: expected the layout "
                    "root/<class_name>/<image files>"
                )
            return names
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise TypeError(f"classes must be a list of folder names, got {classes!r}")
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be non-empty and without duplicates, got {list(classes)!r}")
        missing = [c for c in classes if not (root / c).is_dir()]
        if missing:
            raise ValueError(
                f"classes names folders that do not exist in {str(root)!r}: {missing}; "
                f"found {sorted(e.name for e in os.scandir(root) if e.is_dir())}"
            )
        return list(classes)

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def paths(self) -> StringStorage:
        """Full path of every image (numpy-backed, not a Python list)."""
        return self._paths

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def _get(self, index: int) -> dict[str, Any]:
        stage = _stage or _import_stage()
        path = self._paths[index]
        image: Any
        if self._pass_path:  # the transform decodes (only what it keeps): one stage
            with stage("transform"):
                image = self.transform(path)  # type: ignore[misc]
        else:
            with stage("decode" if self.decode else "read"):
                image = decode_image(path) if self.decode else read_file(path)
            if self.transform is not None:
                with stage("transform"):
                    image = self.transform(image)
        return {"image": image, "label": int(self._labels[index]), "path": path}

    def _get_batch(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch: through the transform's ``call_batch`` when it decodes the files itself
        and has one (the presets' one native call per batch: NOTE [one native call per
        batch] in ``dataforge/_crops.cpp``), else sample by sample."""
        call_batch = getattr(self.transform, "call_batch", None) if self._pass_path else None
        if call_batch is None or len(indices) < 2:
            return [self._get(i) for i in indices]
        stage = _stage or _import_stage()
        paths = [self._paths[i] for i in indices]
        with stage("transform", len(paths)):
            images = call_batch(paths)
        return [{"image": image, "label": int(self._labels[i]), "path": path}
                for image, i, path in zip(images, indices, paths)]

    def __repr__(self) -> str:
        return (
            f"ImageFolder(root={self.root!r}, len={len(self)}, classes={len(self.classes)}, "
            f"decode={self.decode})"
        )
