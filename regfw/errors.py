"""regfw's errors and the exit codes the command line gives them.

| code | meaning |
|---|---|
| 0 | the run completed (a multirun: every job completed) |
| 1 | a multirun in which a job failed or diverged (after every job ran), or an internal error |
| 2 | a mistake in the config, command line, data, plugins or run folder: nothing was trained |
| 3 | a single run diverged (its metrics and last good checkpoint are kept) |
| 4 | an output could not be written (disk full, file too large, I/O error); earlier files kept |

Every error here prints as one line, `regfw: error: <message>`, without a traceback
(`HYDRA_FULL_ERROR=1` shows it). This module imports nothing, so any layer may use it.
"""

from __future__ import annotations

import os
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_WRITE_ERROR = 4


class RegfwError(Exception):
    """An error regfw reports in one line with its own exit code."""

    exit_code = EXIT_FAILED


class UserError(RegfwError):
    """The user's mistake (config, data, plugins, run folder): exit code 2, nothing trained."""

    exit_code = EXIT_USER_ERROR


class ConfigError(UserError, ValueError):
    """A config value that is not allowed.

    Args:
        key: The dotted config path, e.g. `penalty.scale`.
        value: The value given.
        allowed: What is allowed instead, e.g. `expected a finite number >= 0`.
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, " ".join(str(allowed).split())
        super().__init__(f"{key}={show(value)}: {self.allowed}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable for launchers that run jobs elsewhere
        return (type(self), (self.key, self.value, self.allowed))


class RunFolderError(UserError):
    """A run folder regfw must not use as asked (not empty, locked, another experiment...)."""


class PluginError(UserError):
    """A plugin that could not be imported, or that did something a plugin must not do."""


class JobStopped(RegfwError):
    """A sweep job stopped from outside before it finished, e.g. at Slurm's time limit.

    The sweep records the job with `status` and goes on; the run keeps its last checkpoint, so
    re-running the sweep with `trainer.resume=true` continues it.

    Args:
        status: How the sweep's summary records the job: `timeout` or `cancelled`.
        reason: What stopped it, and how to continue.
    """

    def __init__(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason
        super().__init__(reason)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: a Slurm job returns it to the submitter
        return (type(self), (self.status, self.reason))


class OutputError(RegfwError):
    """An output file could not be written; the previous good file is kept (exit code 4)."""

    exit_code = EXIT_WRITE_ERROR


def full_error() -> bool:
    """Whether the user asked for tracebacks (`HYDRA_FULL_ERROR=1`, Hydra's own switch)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def show(value: Any) -> str:
    """Shows a config value as the user would type it (`'text'`, `1e-05`, `[1, 2]`, `null`)."""
    if hasattr(value, "_metadata"):  # an OmegaConf node: show it as plain containers
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value)
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)
