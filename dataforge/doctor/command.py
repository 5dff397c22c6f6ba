"""``dataforge doctor TARGET``: the doctor from a shell.

``TARGET`` names a function returning a loader (a factory, NOTE [rebuild rule] in
``trials.py``) or a loader object: ``pkg.module:make_loader`` (imported with the
current directory on ``sys.path``, as ``python -m`` does) or
``path/to/file.py:make_loader`` (with the file's folder on ``sys.path``, as
``python path/to/file.py`` does). Recipe configs (``recipes/configs/*.json``) are
refused with the reason: the recipes build their loaders inside ``main()`` and
expose no loader factory.

Example:
    $ dataforge doctor my_project.data:make_train_loader --seconds 20 --step-ms 80 \\
          --png doctor.png --trace doctor.json
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

ABOUT = ("run a loader for a bounded time and say what bounds it, with advice verified by "
         "trial runs")


class TargetError(ValueError):
    """``TARGET`` cannot be resolved; the message says why and what to pass."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``doctor`` subcommand's arguments."""
    p.add_argument("target", metavar="TARGET",
                   help="pkg.module:make_loader or path/to/file.py:make_loader: a function "
                        "f(**overrides) -> loader (or a loader object)")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S",
                   help="steady-state seconds of the main run (default 10)")
    p.add_argument("--step-ms", type=float, default=0.0, metavar="MS",
                   help="simulated training step per batch, in ms (default 0: the pipeline alone)")
    p.add_argument("--trial-seconds", type=float, default=None, metavar="S",
                   help="seconds of each trial run (default max(1, seconds / 3))")
    p.add_argument("--max-trials", type=int, default=4, metavar="N",
                   help="at most this many trial runs (default 4)")
    p.add_argument("--no-trials", action="store_true", help="diagnose only, try no change")
    p.add_argument("--png", metavar="FILE", help="write the picture here (needs matplotlib)")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace / Perfetto JSON here")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON here")


def resolve(target: str) -> Any:
    """The object ``TARGET`` names.

    Raises:
        TargetError: a malformed target, a missing module, file or attribute, or a recipe config.
    """
    if target.endswith(".json"):
        raise TargetError(
            f"{target!r} is a config file; the recipes build their loaders inside main() and expose "
            "no loader factory, so point the doctor at a function returning the loader "
            "(pkg.module:make_loader)"
        )
    mod_name, sep, attr = target.rpartition(":")
    if not sep or not mod_name or not attr:
        raise TargetError(f"TARGET must look like pkg.module:make_loader or file.py:make_loader, got {target!r}")
    if mod_name.endswith(".py"):
        path = Path(mod_name).expanduser()
        if not path.is_file():
            raise TargetError(f"TARGET names the file {mod_name!r}, which does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise TargetError(f"cannot import {mod_name!r} as a Python file")
        folder = str(path.resolve().parent)
        if folder not in sys.path:  # as `python path/to/file.py` does: its neighbours import
            sys.path.insert(0, folder)
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, module)  # so that its workers can unpickle its classes
        spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name and mod_name.startswith(exc.name):
                raise TargetError(f"no module {mod_name!r} (from TARGET {target!r}); run from the "
                                  "folder that holds it or install its package") from None
            raise
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"{mod_name!r} has no attribute {attr!r} (from TARGET {target!r})")
        obj = getattr(obj, part)
    return obj


def main(args: argparse.Namespace) -> int:
    """Run ``dataforge doctor`` with parsed ``args``; print the report; return the exit code."""
    from dataforge.doctor import doctor
    from dataforge.doctor.trials import NotALoader, Rebuilder

    try:
        for flag, value in (("--seconds", args.seconds), ("--trial-seconds", args.trial_seconds)):
            if value is not None and not value > 0:
                raise TargetError(f"{flag} must be a positive number of seconds, got {value}")
        if not args.step_ms >= 0:
            raise TargetError(f"--step-ms must be >= 0, got {args.step_ms}")
        if args.max_trials < 0:
            raise TargetError(f"--max-trials must be >= 0, got {args.max_trials}")
        target = resolve(args.target)
        Rebuilder(target)  # a factory that cannot be called without arguments is refused here
    except (TargetError, TypeError) as exc:
        print(f"dataforge doctor: error: {exc}", file=sys.stderr)
        return 2
    started = _join_torchrun()
    try:  # errors of the pipeline itself keep their traceback: they point into the user's code
        report = doctor(
            target, seconds=args.seconds, step_ms=args.step_ms, trials=not args.no_trials,
            trial_seconds=args.trial_seconds, max_trials=args.max_trials, png=args.png,
            trace=args.trace,
        )
    except NotALoader as exc:
        print(f"dataforge doctor: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()
    if args.json:
        path = Path(args.json)
        if report.ranks is not None:
            path = path.with_name(f"{path.stem}.rank{report.rank}{path.suffix}")
        path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        report.files["json"] = str(path)
    if report.rank == 0:  # every rank's report lists all ranks; one of them is printed
        print(report, flush=True)
    return 0


def _join_torchrun() -> bool:
    """NOTE [doctor under torchrun]: launched by ``torchrun`` (``WORLD_SIZE`` > 1) without a
    process group, the command starts one (gloo, from torchrun's environment) so that the
    ranks can gather their figures; it is ended after the run. Returns whether it started one."""
    import torch.distributed as dist

    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) < 2 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group("gloo")
    return True
