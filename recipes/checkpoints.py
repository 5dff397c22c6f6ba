"""Checkpoints as plain data: writing, reading for resume (config checked first),
reading pretrained weights. No file is ever unpickled in full.

Recipes are meant to be copied: this file goes with them. It also converts
checkpoints written before the format field existed::

    python recipes/checkpoints.py upgrade-checkpoint runs/image/checkpoint.pt
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RecipeError, flatten, run_main  # noqa: E402


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()


# Fields that may change between a run and its resume: they do not alter the training
# trajectory (how long to train, where to write, how often to log or checkpoint).
RESUME_MAY_CHANGE = ("train.epochs", "train.max_steps", "train.out", "train.log_every", "train.checkpoint_every")


def config_diff(saved: dict[str, Any], now: dict[str, Any],
                may_change: tuple[str, ...] = RESUME_MAY_CHANGE) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for every leaf that differs, by dotted key;
    a key absent on one side has the value ``MISSING`` there."""
    a, b = flatten(saved), flatten(now)
    diff = []
    for key in sorted(a.keys() | b.keys()):
        if any(key == m or key.startswith(m + ".") for m in may_change):
            continue
        va, vb = a.get(key, MISSING), b.get(key, MISSING)
        if va != vb:
            diff.append((key, va, vb))
    return diff


# NOTE [plain checkpoints]: a checkpoint is plain data (dicts, lists, strings, numbers
# and tensors) and is read with ``torch.load(weights_only=True)``, whose unpickler
# builds nothing else, so a crafted file cannot run code. The config (plain JSON)
# is compared first, before any other field is used. ``format`` versions the
# layout; a file without it predates plain checkpoints and is refused with the
# way forward (``upgrade-checkpoint``), never unpickled in full.
CHECKPOINT_FORMAT = 2
_CHECKPOINT_FIELDS = (("model", dict), ("optimizer", dict), ("loader", dict), ("step", int))


def one_line(exc: BaseException) -> str:
    """An exception's message on one line: the line of a weights-only refusal that names
    the culprit, else the type and all lines joined (at most 300 characters)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        culprit = re.search(r"GLOBAL ([\w.]+)|Unsupported operand \d+", ln)
        if culprit:
            return f"it names {culprit.group(1)}" if culprit.group(1) else culprit.group(0)
    text = f"{type(exc).__name__}: {' '.join(lines)}".split(". This is an internal")[0]
    return text if len(text) <= 300 else text[:297] + "..."


def read_plain(path: str | os.PathLike[str], what: str) -> Any:
    """Load a torch file as plain data only (``weights_only=True``), with one-line errors.

    Args:
        path: the file.
        what: how the error names the file, e.g. ``"--resume checkpoint"``.
    """
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{what} does not exist: {str(p)!r}")
    try:
        with warnings.catch_warnings():
            # a raw pickle draws a protocol warning before the refusal; the refusal says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RecipeError(
            f"{what} {str(p)!r} refused: it holds Python objects other than tensors and plain data "
            f"({one_line(exc)}), and loading those could run code; recipe checkpoints and state_dict "
            "files never hold them. Use a file written by these recipes or a plain state_dict") from None
    except Exception as exc:  # a damaged or foreign file fails in zip, pickle or storage code
        raise RecipeError(f"{what} {str(p)!r} is not a readable torch file ({one_line(exc)})") from None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` plus the format field atomically (temp file + rename), so a crash
    never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)


def _require_fields(state: dict[str, Any], where: str) -> None:
    for key, kind in _CHECKPOINT_FIELDS:
        if not isinstance(state.get(key), kind):
            raise RecipeError(f"{where}: field {key!r} is missing or not a {kind.__name__}; "
                              "the file is damaged or not a recipe checkpoint")


def _as_arg(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def load_checkpoint(path: str | os.PathLike[str], cfg: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint (plain data only) and check it was written with ``cfg``.

    Raises:
        RecipeError: the file is missing, not plain data, of another format, written
            with another config (the message names the keys that differ) or damaged.
    """
    p = str(path)
    state = read_plain(path, "--resume checkpoint")
    if not isinstance(state, dict):
        raise RecipeError(f"--resume {p!r} is not a recipe checkpoint (it holds a {type(state).__name__})")
    if "format" not in state:
        raise RecipeError(
            f"--resume {p!r} has no 'format' field: it was written by an older version of the recipes "
            f"or is not a recipe checkpoint. Convert an older checkpoint once (read as plain data, nothing "
            f"unpickled): python recipes/checkpoints.py upgrade-checkpoint {p}; or start a new run with another --out")
    if state["format"] != CHECKPOINT_FORMAT:
        raise RecipeError(f"--resume {p!r} has format {state['format']!r}; these recipes read format "
                          f"{CHECKPOINT_FORMAT}: resume it with the recipes that wrote it, or start a new run")
    if not isinstance(state.get("config"), dict):
        raise RecipeError(f"--resume {p!r} has no 'config' dict; the file is damaged or not a recipe checkpoint")
    diff = config_diff(state["config"], cfg)
    if diff:
        shown = "; ".join(f"{k} is {json.dumps(a) if a is not MISSING else a} there, "
                          f"{json.dumps(b) if b is not MISSING else b} now" for k, a, b in diff[:6])
        more = f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""
        fix = " ".join(f"--set {k}={_as_arg(a)}" for k, a, b in diff if a is not MISSING and b is not MISSING)
        raise RecipeError(f"--resume {p!r} was written with another config: {shown}{more}; resume with the "
                          f"checkpoint's config" + (f" ({fix})" if fix else ""))
    _require_fields(state, f"--resume {p!r}")
    return state


def upgrade_checkpoint(path: str | os.PathLike[str]) -> str:
    """Add the format field to a checkpoint written before it existed (read as plain data)."""
    state = read_plain(path, "checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise RecipeError(f"{str(path)!r} is not a recipe checkpoint (no 'config' dict)")
    if "format" in state:
        return f"{path}: already format {state['format']}, unchanged"
    _require_fields(state, repr(str(path)))
    state.pop("config_hash", None)
    save_checkpoint(Path(path), state)
    return f"{path}: upgraded to format {CHECKPOINT_FORMAT}"


def load_pretrained(model: torch.nn.Module, path: str | os.PathLike[str], model_name: str) -> str:
    """Copy into ``model`` every tensor of a weights file whose name and shape match.

    The file is a plain ``state_dict`` (e.g. torchvision's ``resnet18.pth``) or a recipe
    checkpoint (its model part is taken). Tensors whose shape differs (a head for
    another number of classes) keep the model's own values.

    Returns:
        One line for the user: ``loaded X of Y tensors ...``.

    Raises:
        RecipeError: the file is missing, not plain data, or matches no tensor of the model.
    """
    obj = read_plain(path, "--pretrained weights file")
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict"):  # a recipe checkpoint, or a trainer's {"state_dict": ...}
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise RecipeError(f"--pretrained {str(path)!r} is not a state_dict (it holds a {type(obj).__name__})")
    weights = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    own = model.state_dict()
    same = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    reshaped = sorted(k for k in weights if k in own and own[k].shape != weights[k].shape)
    if not same:
        example = f", e.g. {next(iter(weights))!r}" if weights else ""
        raise RecipeError(f"--pretrained {str(path)!r} matches none of the {len(own)} tensors of {model_name} "
                          f"by name and shape (the file holds {len(weights)} tensors{example}); "
                          "is model.type the model these weights are for?")
    model.load_state_dict(same, strict=False)
    line = f"--pretrained: loaded {len(same)} of {len(own)} tensors from {path}"
    if reshaped:
        line += f"; {len(reshaped)} kept as initialised (shape differs: {', '.join(reshaped[:4])})"
    unused = len(weights) - len(same) - len(reshaped)
    if unused:
        line += f"; {unused} tensors of the file have no counterpart"
    return line


def main(argv: list[str]) -> None:
    """``upgrade-checkpoint PATH [PATH ...]``: the one command of this file."""
    if len(argv) < 2 or argv[0] != "upgrade-checkpoint":
        raise RecipeError("usage: python recipes/checkpoints.py upgrade-checkpoint CHECKPOINT [CHECKPOINT ...]")
    for path in argv[1:]:
        print(upgrade_checkpoint(path))


if __name__ == "__main__":
    raise SystemExit(run_main(lambda: main(sys.argv[1:])))
