"""Imports the user's own modules listed in `plugins`, so the penalties they register are known.

A plugin is code: it runs only because the user's config names it. An entry ending in `.py` is a
file path (relative to the working directory); any other entry is a module name, importable from
the working directory or the Python path.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

from regfw.config.schema import ConfigError


def load(plugins: Iterable[str]) -> None:
    """Imports each plugin once.

    Raises:
        ConfigError: If a plugin file does not exist or a module cannot be found.
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
    name = f"regfw_plugin_{path.stem}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _load_module(entry: str) -> None:
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        importlib.import_module(entry)
    except ModuleNotFoundError as error:
        if error.name != entry.split(".")[0] and error.name != entry:
            raise
        raise ConfigError(
            "plugins",
            entry,
            "no such module (give a module name importable from here, or a .py path)",
        ) from None
