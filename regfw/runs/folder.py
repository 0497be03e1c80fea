"""What a run folder holds, whether a run may use it, and claiming it for one run.

What regfw writes in a run folder, and the only files it ever deletes or replaces:

- `.regfw.lock`: while the run runs (who runs it); removed when it ends.
- `.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`: once every check passed, before training;
  rewritten when the run is resumed.
- `train.log`: the run's log lines, appended.
- `checkpoint/state.json`, `checkpoint/epoch-<n>.npz`: every `trainer.checkpoint_every`
  epochs, each replacing the last; deleted once `model.keras` and `metrics.json` are on disk.
- `checkpoint.corrupt-<time>/`: an unreadable checkpoint, moved aside; never deleted.
- `metrics.json`, `model.keras`: at the end of the run, atomically; never deleted.
- `train/`, `validation/`: TensorBoard event files; never deleted.
- `events.out.tfevents.<time>.regfw-layout`, `...regfw-session`: regfw's own TensorBoard event
  files (the custom-scalars layout, the HParams session); each replaced only by the next of its
  kind (`regfw.training.events`).

A run starts only in a folder that is new or empty, or, with `trainer.resume=true`, in a folder
that holds an earlier run of the same experiment. Everything that can reject a run is checked
before regfw writes anything but its lock, and a rejected run leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.config.yaml_text import to_yaml
from regfw.errors import RunFolderError
from regfw.runs import atomic
from regfw.runs.lock import NAME as LOCK
from regfw.runs.lock import RunLock

HYDRA = ".hydra"
CONFIG = f"{HYDRA}/config.yaml"
METRICS = "metrics.json"
MODEL = "model.keras"
CHECKPOINT = "checkpoint"
CHECKPOINT_STATE = f"{CHECKPOINT}/state.json"

# Keys a resumed run may change: they cannot change the numbers of the epochs already run.
# trainer.epochs may only grow (checked on its own).
RESUMABLE_CHANGES = (
    "trainer.epochs",
    "trainer.resume",
    "trainer.verbose",
    "trainer.histograms",
    "trainer.diagnostics",
    "trainer.checkpoint_every",
    "trainer.monitor",
)


@dataclass(frozen=True)
class FolderState:
    """What a run folder holds now.

    Attributes:
        path: The folder.
        entries: The names in it (regfw's lock file left out); empty if it does not exist.
        config: The config of the run recorded there (`.hydra/config.yaml`), if any.
        metrics: Its `metrics.json`, if readable.
        checkpoint: Its `checkpoint/state.json`, if readable.
    """

    path: Path
    entries: tuple[str, ...] = ()
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None

    @property
    def is_run(self) -> bool:
        """Whether it holds a regfw run (its config, metrics or checkpoint)."""
        return any(x is not None for x in (self.config, self.metrics, self.checkpoint))


@dataclass
class Plan:
    """What a run does in its folder.

    Attributes:
        action: `fresh` (train from the start), `resume` (continue from the checkpoint after
            `epochs_done` epochs), `finish` (every epoch is in the checkpoint: write the final
            outputs) or `skip` (the run completed earlier: nothing to do).
        epochs_done: Epochs in the checkpoint.
        previous: The completed run's metrics (for `skip`).
        checkpoint: The checkpoint's state (for `resume` and `finish`).
        notes: Lines to log once the run is recorded (what was resumed, a stale lock taken).
    """

    action: str
    epochs_done: int = 0
    previous: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception:  # a missing or unparsable file: not a record we can use
        return None
    return data if isinstance(data, dict) else None


def inspect(path: Path) -> FolderState:
    """Reads what a run folder holds (nothing if it does not exist)."""
    path = Path(path)
    if not path.is_dir():
        return FolderState(path)
    return FolderState(
        path,
        tuple(sorted(p.name for p in path.iterdir() if p.name != LOCK)),
        _read_config(path / CONFIG),
        _read_json(path / METRICS),
        _read_json(path / CHECKPOINT_STATE),
    )


def check_location(path: str | os.PathLike, key: str) -> Path:
    """Checks that a run folder can be created or used at `path`.

    Args:
        path: The folder.
        key: The config key that named it, for the message.

    Raises:
        RunFolderError: If the path is empty, is a file (or under one), or cannot be written.
    """
    if not str(path).strip():
        raise RunFolderError(
            f"{key}='': a run needs a folder of its own, never the current folder; give one "
            "such as outputs/my-run"
        )
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise RunFolderError(f"{key}={path}: {where}, not a folder; choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(
            f"{key}={path}: cannot write in {existing} (read-only or permission denied); "
            "choose a folder you can write to"
        )
    return path


def differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Returns `key: old -> new` for every config value that differs, but `RESUMABLE_CHANGES`."""
    old, now = _flat(saved), _flat(new)
    changed = []
    for key in sorted(set(old) | set(now)):
        if key in RESUMABLE_CHANGES or old.get(key, "<absent>") == now.get(key, "<absent>"):
            continue
        changed.append(f"{key}: {_shown(old.get(key))} -> {_shown(now.get(key))}")
    return changed


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def _shown(value: Any) -> str:
    return "<absent>" if value is None else json.dumps(value)


def plan(state: FolderState, cfg: Mapping[str, Any], resume: bool, where: str) -> Plan:
    """Decides what a run does in its folder, or refuses.

    Args:
        state: The folder as it is (`inspect`).
        cfg: The new run's config, as plain containers.
        resume: `trainer.resume`.
        where: How to name the folder in messages (`hydra.run.dir=outputs/x`).

    Raises:
        RunFolderError: For a folder that holds something else, an earlier run without
            `trainer.resume=true`, or an earlier run of a different experiment.
    """
    if not state.entries:
        note = f"no checkpoint in {state.path / CHECKPOINT}; starting from scratch"
        return Plan("fresh", notes=[note] if resume else [])
    if not state.is_run:
        shown = ", ".join(state.entries[:5]) + (", ..." if len(state.entries) > 5 else "")
        raise RunFolderError(
            f"{where}: the folder is not empty and holds no regfw run ({shown}); regfw only "
            "writes into a new or empty folder: choose another"
        )
    status = (state.metrics or {}).get("status", "interrupted")
    if not resume:
        raise RunFolderError(
            f"{where}: the folder already holds a regfw run (status {status}); continue it with "
            "trainer.resume=true, or choose a new folder"
        )
    if state.config is None:
        raise RunFolderError(
            f"{where}: cannot check that trainer.resume=true continues the same experiment: "
            f"{CONFIG} is missing or unreadable"
        )
    changed = differences(state.config, cfg)
    if changed:
        raise RunFolderError(
            f"{where}: trainer.resume=true must continue the same experiment, but "
            f"{'; '.join(changed)}. Only trainer.epochs may grow and "
            f"{', '.join(k.removeprefix('trainer.') for k in RESUMABLE_CHANGES[1:])} may change; "
            "choose a new folder for a new experiment"
        )
    epochs = cfg["trainer"]["epochs"]
    if status == "completed":
        done = state.metrics.get("epochs_run")
        if done != epochs:
            raise RunFolderError(
                f"{where}: the run there completed {done} epochs and trainer.epochs={epochs}; a "
                "completed run is not extended (its checkpoint is gone): start a new run"
            )
        note = f"{state.path} already completed; nothing to do (trainer.resume=true)"
        return Plan("skip", done, previous=state.metrics, notes=[note])
    if state.checkpoint is None:
        note = f"no checkpoint in {state.path / CHECKPOINT}; starting from scratch"
        return Plan("fresh", notes=[note])
    done = state.checkpoint.get("epochs_completed")
    if not isinstance(done, int) or done < 0:
        return Plan("resume", 0, checkpoint=state.checkpoint)  # restore() reports it unreadable
    if done > epochs:
        raise RunFolderError(
            f"{where}: trainer.epochs={epochs}, but the run there already completed {done} "
            f"epochs; set trainer.epochs >= {done}"
        )
    return Plan("finish" if done == epochs else "resume", done, checkpoint=state.checkpoint)


@dataclass
class Claim:
    """A run folder claimed for one run (see `claim`).

    Attributes:
        path: The run folder.
        plan: What the run does there.
        recorded: Whether the run's config has been written (`record`); until then a failure
            leaves the folder as it was.
    """

    path: Path
    plan: Plan
    recorded: bool = False

    def record(self, cfg: DictConfig) -> None:
        """Writes the run's record (`record`); from then on the folder holds this run."""
        record(self.path, cfg)
        self.recorded = True


def record(path: Path, cfg: DictConfig) -> None:
    """Writes a run's config to `<path>/.hydra/config.yaml`, with Hydra's own record beside it.

    When the run comes from `train.py`, Hydra's config (`hydra.yaml`) and the command-line
    overrides (`overrides.yaml`) are written too, as Hydra would (regfw sets
    `hydra.output_subdir: null` so that Hydra writes nothing before regfw's checks pass).
    """
    from hydra.core.hydra_config import HydraConfig

    folder = Path(path) / HYDRA
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / "config.yaml", to_yaml(cfg))
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.instance().cfg
        atomic.write_text(folder / "hydra.yaml", to_yaml(hydra_cfg))
        overrides = OmegaConf.to_container(hydra_cfg.hydra.overrides.task)
        atomic.write_text(folder / "overrides.yaml", to_yaml(overrides))


def plan_run(path: str | os.PathLike, cfg: DictConfig, where: str) -> Plan:
    """`plan` for a run of `cfg` in `path` as the folder is now (what `claim` decides, unlocked).

    Raises:
        RunFolderError: As `plan`.
        omegaconf.errors.OmegaConfBaseException: If `cfg` has a value that cannot be resolved here.
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    return plan(inspect(Path(path)), container, bool(cfg.trainer.resume), where)


@contextlib.contextmanager
def claim(
    path: str | os.PathLike,
    cfg: DictConfig,
    where: str,
    new_folders: tuple[Path, ...] = (),
) -> Iterator[Claim]:
    """Claims a run folder for one run: checks it, locks it and plans the run.

    If the block fails before `Claim.record`, the folder is left as it was: the lock is removed,
    and so are the folders this claim (or the command line, `new_folders`) created if they are
    still empty.

    Args:
        path: The run folder.
        cfg: The run's config.
        where: How to name the folder in messages, e.g. `hydra.run.dir=outputs/x`.
        new_folders: Folders the caller knows it created for this run (Hydra creates the run
            folder before the task starts), innermost first.

    Raises:
        RunFolderError: If the folder cannot be used (see `check_location`, `plan`) or another
            run holds it.
    """
    key = where.split("=", 1)[0]
    path = check_location(path, key)
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    lock = RunLock(path, where)
    claimed = None
    try:
        taken_over = lock.acquire()
        claimed = Claim(path, plan_run(path, cfg, where))
        if taken_over:
            claimed.plan.notes.insert(0, taken_over)
        yield claimed
    finally:
        lock.release()
        if claimed is None or not claimed.recorded:
            for folder in [*created, *new_folders]:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only empty folders go
