"""Imports the user's own modules listed in `plugins`, so the penalties they register are known.

A plugin is code: it runs only because the user's config names it. An entry ending in `.py` is a
file path (relative to the working directory); any other entry is a module name, importable from
the working directory or the Python path. A file is imported once per process, keyed by its
resolved path: two files with the same name in different folders are two plugins, and the same
file named twice (a sequential sweep, a notebook) is imported once.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from regfw.errors import ConfigError, PluginError

_FILES: dict[Path, ModuleType] = {}


def load(plugins: Iterable[str]) -> None:
    """Imports each plugin once.

    Raises:
        ConfigError: If a plugin file does not exist or a module cannot be found.
        PluginError: If importing a plugin raises (the message names its file and line) or
            tries to end the process.
    """
    for entry in plugins:
        if entry.endswith(".py"):
            _load_file(entry)
        else:
            _load_module(entry)


def _load_file(entry: str) -> None:
    path = Path(entry).resolve()
    if not path.is_file():
        raise ConfigError("plugins", entry, f"no such file {path}")
    if path in _FILES:
        return
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"regfw_plugin_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        del sys.modules[name]
        raise _plugin_error(entry, path, error) from error
    _FILES[path] = module


def importable_from_working_directory() -> None:
    """Puts the working directory on `sys.path`: modules there import (plugins, `_target_`)."""
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _load_module(entry: str) -> None:
    importable_from_working_directory()
    try:
        importlib.import_module(entry)
    except ModuleNotFoundError as error:
        if error.name != entry.split(".")[0] and error.name != entry:
            raise _plugin_error(entry, None, error) from error
        raise ConfigError(
            "plugins",
            entry,
            "no such module (give a module name importable from here, or a .py path)",
        ) from None
    except (Exception, SystemExit) as error:
        spec = importlib.util.find_spec(entry)
        origin = Path(spec.origin).resolve() if spec and spec.origin else None
        raise _plugin_error(entry, origin, error) from error


def _plugin_error(entry: str, path: Path | None, error: BaseException) -> PluginError:
    """One line naming the plugin, the line of it that failed, and what happened."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if path is not None and Path(f.filename).resolve() == path]
    where = f"{ours[-1].filename}, line {ours[-1].lineno}" if ours else entry
    if isinstance(error, SystemExit):
        what = (
            f"called sys.exit({error.code!r}) while being imported; a plugin may only define and "
            "register things (nothing was trained)"
        )
    else:
        what = f"raised {type(error).__name__}: {' '.join(str(error).split())}"
    return PluginError(f"plugins=[{entry}]: {where} {what}")
