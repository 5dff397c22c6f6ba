"""Device feeding: pinned host memory, side-stream copies, the next batches in flight.

NOTE [device prefetch]: for each batch, in order:

1. pin: CPU tensors go to page-locked memory (only for a CUDA target, and only
   those not pinned already: a ``DataLoader(pin_memory=True)`` pins in its own
   thread);
2. copy: ``tensor.to(device, non_blocking=True)`` issued on a side CUDA stream, so
   the copy overlaps the compute of the batch the consumer holds;
3. transform: ``batch_transforms`` run on the device, on the same side stream;
4. an event is recorded on the side stream; when the batch is handed over, the
   consumer's current stream waits on that event (``wait_stream`` semantics,
   limited to this batch's work so that copies of later batches still overlap),
   and every tensor of the batch gets ``record_stream(current)`` so the caching
   allocator does not reuse its memory while the consumer's stream still uses it.

The other direction: at the start of a pass, and before it touches tensors that
are already on the device, the side stream waits for the consumer's stream
(``side.wait_stream(current)``), so it never reads a half-written buffer.

While the consumer holds one batch, the next ``depth`` are in flight.
On a CPU (or any non-CUDA) device the same code runs without streams or pinning.

NOTE [batch_transforms and keys]: ``batch_transforms`` is one callable or a list
of callables applied in order (image batch transforms take an NCHW tensor).
What they receive depends on ``keys``:

- ``"auto"`` (default): a tensor batch whole; ``batch["image"]`` of a dict batch;
  ``batch[0]`` of a tuple / list / namedtuple batch (``(images, labels)``);
- ``None``: the whole batch, whatever it is;
- a key or index, or a tuple of them: ``batch[key]`` for each.

The batch is rebuilt with the results; other entries pass through untouched.

NOTE [consumer threads on CPU]: a ``Loader`` whose workers keep every core busy
runs CPU batch transforms with one intra-op thread (``cpu_threads=1``, restored
after each batch): with torch's default of one OpenMP thread per core, the
consumer's normalize would spin up a team that competes with the workers
(measured on 2 cores, thread engine: 1,100-1,480 vs about 1,700 samples/s).
Nothing changes for CUDA targets or for a loader without workers.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch

if TYPE_CHECKING:
    from dataforge.loading.stats import StageTimes

T = TypeVar("T")

Transform = Callable[[Any], Any]


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (str, bytes)) or obj is None:
        return obj
    if isinstance(obj, Mapping):
        items = {k: _map_tensors(v, fn) for k, v in obj.items()}
        try:
            return type(obj)(items)  # type: ignore[call-arg]
        except TypeError:
            return items
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_map_tensors(v, fn) for v in obj))
    if isinstance(obj, (tuple, list)):
        out = [_map_tensors(v, fn) for v in obj]
        try:
            return type(obj)(out)
        except TypeError:
            return out
    return obj


def _each_tensor(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _each_tensor(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _each_tensor(v)


def pin_batch(batch: Any) -> Any:
    """Pin every CPU tensor of a nested batch (a no-op without CUDA)."""
    if not torch.cuda.is_available():
        return batch

    def pin(t: torch.Tensor) -> torch.Tensor:
        return t if t.device.type != "cpu" or t.is_pinned() else t.pin_memory()

    return _map_tensors(batch, pin)


def _item(batch: Any, key: Any) -> Any:
    if not isinstance(batch, (Mapping, tuple, list)):
        raise TypeError(
            f"keys={key!r} needs a dict, tuple or list batch, got {type(batch).__name__}; "
            "pass keys=None to transform the whole batch"
        )
    try:
        return batch[key]
    except (KeyError, IndexError, TypeError):
        have = list(batch) if isinstance(batch, Mapping) else f"positions 0..{len(batch) - 1}"
        raise KeyError(f"keys={key!r} is not in the batch (it has {have})") from None


def _replace(batch: Any, key: Any, value: Any) -> Any:
    if isinstance(batch, Mapping):
        out = dict(batch)
        out[key] = value
        try:
            return type(batch)(out)  # type: ignore[call-arg]
        except TypeError:
            return out
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return batch._replace(**{batch._fields[key]: value})  # type: ignore[attr-defined]
    if isinstance(batch, (tuple, list)):
        out_l = list(batch)
        out_l[key] = value
        return type(batch)(out_l)
    raise TypeError(
        f"keys={key!r} needs a dict, tuple or list batch, got {type(batch).__name__}; "
        "pass keys=None to transform the whole batch"
    )


def normalize_transforms(batch_transforms: Transform | Sequence[Transform] | None) -> list[Transform]:
    if batch_transforms is None:
        return []
    fns: list[Transform] = (
        list(batch_transforms) if isinstance(batch_transforms, (list, tuple)) else [batch_transforms]  # type: ignore[list-item]
    )
    for fn in fns:
        if not callable(fn):
            raise TypeError(
                f"batch_transforms must be a callable or a list of callables, got {fn!r}"
            )
    return fns


def _auto_keys(batch: Any) -> tuple[Any, ...] | None:
    if isinstance(batch, torch.Tensor):
        return None
    if isinstance(batch, Mapping):
        if "image" not in batch:
            raise KeyError(
                f"batch_transforms with keys='auto' look for batch['image'], but the batch has "
                f"keys {list(batch)}; pass keys=... (e.g. transform_keys='pixels') or keys=None"
            )
        return ("image",)
    if isinstance(batch, (tuple, list)):
        return (0,)
    return None


def normalize_keys(keys: Any) -> tuple[Any, ...] | str | None:
    if keys is None or keys == "auto":
        return keys
    return tuple(keys) if isinstance(keys, (list, tuple)) else (keys,)


@contextlib.contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block (NOTE [consumer threads on CPU])."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class Transfer:
    """The per-batch machinery shared by :class:`DevicePrefetcher` and ``Loader``."""

    def __init__(
        self,
        device: torch.device,
        transforms: list[Transform],
        keys: tuple[Any, ...] | str | None,
        pin: bool,
        cpu_threads: int | None = None,
    ) -> None:
        self.device = device
        self.transforms = transforms
        self.keys = keys
        self.cpu_threads = cpu_threads if device.type == "cpu" else None
        self.cuda = device.type == "cuda"
        self.pin = pin and self.cuda
        self.stream = torch.cuda.Stream(device) if self.cuda else None

    def _apply(self, batch: Any) -> Any:
        keys = _auto_keys(batch) if self.keys == "auto" and self.transforms else self.keys
        with _intra_op_threads(self.cpu_threads if self.transforms else None):
            for fn in self.transforms:
                if keys is None:
                    batch = fn(batch)
                else:
                    for key in keys:
                        batch = _replace(batch, key, fn(_item(batch, key)))
        return batch

    def begin(self) -> None:
        """At the start of a pass: the side stream waits for work already queued on the
        consumer's stream (e.g. transform buffers just moved to the device)."""
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def start(self, batch: Any) -> tuple[Any, Any]:
        """Issue the copy (and transforms) of one batch; return ``(batch, event)``."""
        if batch is None:
            return None, None
        if self.pin:
            batch = pin_batch(batch)
        if self.stream is None:
            moved = _map_tensors(batch, lambda t: t.to(self.device))
            return self._apply(moved), None
        if any(t.is_cuda for t in _each_tensor(batch)):
            # NOTE: device tensors may still be written by the consumer's stream
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            moved = _map_tensors(batch, lambda t: t.to(self.device, non_blocking=True))
            moved = self._apply(moved)
            event = torch.cuda.Event()
            event.record(self.stream)
        return moved, event

    def finish(self, moved: Any, event: Any) -> Any:
        """Make the consumer's stream wait for this batch; protect its memory."""
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in _each_tensor(moved):
                if t.device.type == "cuda":
                    t.record_stream(current)
        return moved


class TimedTransfer(Transfer):
    """The device path, its host time counted as the consumer-side stages ``h2d`` (when
    there is a device) and ``batch_transform`` (NOTE [stage statistics] in stats.py)."""

    def __init__(self, stages: StageTimes, copies: bool, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stages = stages
        self.copies = copies
        self.transform_s = 0.0
        self.transforms = [self._timed(fn) for fn in self.transforms]

    def _timed(self, fn: Transform) -> Transform:
        def run(batch: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(batch)
            finally:
                self.transform_s += time.perf_counter() - t0

        return run

    def start(self, batch: Any) -> tuple[Any, Any]:
        if batch is None:
            return super().start(batch)
        self.transform_s = 0.0
        t0 = time.perf_counter()
        out = super().start(batch)
        total = time.perf_counter() - t0
        if self.transforms:
            self.stages.add("batch_transform", self.transform_s)
        if self.copies:
            self.stages.add("h2d", total - self.transform_s)
        return out


def prefetch_pairs(
    source: Iterator[tuple[Any, Any]], transfer: Transfer, depth: int
) -> Iterator[tuple[Any, Any]]:
    """Move ``(meta, batch)`` pairs to the device with ``depth`` batches in flight."""
    inflight: collections.deque[tuple[Any, Any, Any]] = collections.deque()
    transfer.begin()
    if transfer.stream is None:
        # NOTE [no lookahead without streams]: on the CPU path nothing runs
        # asynchronously, so fetching ahead would only delay the first batch and waste
        # work when the consumer stops early; hand each batch over as it comes.
        for meta, batch in source:
            yield meta, transfer.start(batch)[0]
        return

    def fill() -> None:
        while len(inflight) < depth:
            try:
                meta, batch = next(source)
            except StopIteration:
                return
            inflight.append((meta, *transfer.start(batch)))

    fill()
    while inflight:
        meta, moved, event = inflight.popleft()
        fill()  # NOTE: issue the next copies before handing this batch over
        yield meta, transfer.finish(moved, event)


class DevicePrefetcher(Generic[T]):
    """Wrap any iterable of batches so that batches arrive on ``device``, prefetched.

    See NOTE [device prefetch] and NOTE [batch_transforms and keys].

    Args:
        iterable: batches (tensors or nested dicts/tuples/lists/namedtuples of them),
            e.g. a stock ``DataLoader``.
        device: target device (``"cuda"``, ``"cuda:1"``, ``"cpu"``...).
        batch_transforms: a callable or list of callables run on the device batch.
        depth: batches in flight on CUDA (>= 1; 2 overlaps one copy with one step); the
            CPU path hands each batch over as it comes (nothing there runs asynchronously).
        keys: what the transforms receive: ``"auto"`` (tensor batch, ``batch["image"]`` or
            ``batch[0]``), ``None`` (the whole batch) or keys / indices.
        pin_memory: ``"auto"`` pins not-yet-pinned CPU tensors when ``device`` is CUDA.

    Example:
        >>> import torch
        >>> loader = torch.utils.data.DataLoader(torch.arange(6), batch_size=4)
        >>> batches = DevicePrefetcher(loader, "cpu", batch_transforms=lambda b: b * 10)
        >>> len(batches), [b.tolist() for b in batches]
        (2, [[0, 10, 20, 30], [40, 50]])
    """

    def __init__(
        self,
        iterable: Iterable[T],
        device: str | torch.device,
        batch_transforms: Transform | Sequence[Transform] | None = None,
        depth: int = 2,
        *,
        keys: Any = "auto",
        pin_memory: bool | str = "auto",
    ) -> None:
        from dataforge.loading.auto import auto_pin_memory, resolve_device

        if not isinstance(iterable, Iterable):
            raise TypeError(
                f"iterable must be an iterable of batches, got {type(iterable).__name__}"
            )
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}; use 2 for one batch ahead")
        dev = resolve_device(device)
        if dev is None:
            raise ValueError("device must be set, got None; pass e.g. device='cuda'")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available; pass device='cpu'")
        self.iterable = iterable
        self.device = dev
        self.depth = depth
        self.keys = normalize_keys(keys)
        self.transforms = normalize_transforms(batch_transforms)
        self.pin = auto_pin_memory(pin_memory, dev)
        self._transfer: Transfer | None = None

    def __len__(self) -> int:
        if not hasattr(self.iterable, "__len__"):
            raise TypeError(f"{type(self.iterable).__name__} has no len(), so neither has DevicePrefetcher")
        return len(self.iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        if self._transfer is None:
            self._transfer = Transfer(self.device, self.transforms, self.keys, self.pin)
        source = ((None, b) for b in self.iterable)
        for _, batch in prefetch_pairs(source, self._transfer, self.depth):
            yield batch
