"""Puts Keras's optimizers and callbacks into Hydra's ConfigStore, as options of their groups.

`optimizer=rmsprop` and `+callbacks@callbacks.stop=early_stopping` compose because every
optimizer and configurable callback Keras offers is an option of the `optimizer` and `callbacks`
groups here, with its constructor's arguments and defaults (from `keras_names.json`). An option
file of the same name in the config tree would take precedence, so none is registered twice.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from regfw.config.compose import conf_dir
from regfw.config.options import KERAS_GROUPS, group_options, option_defaults


def register() -> None:
    """Registers the options (idempotent: storing a name again replaces it)."""
    store = ConfigStore.instance()
    for group in KERAS_GROUPS:
        files = {path.stem for path in (conf_dir() / group).glob("*.yaml")}
        for name in group_options(group):
            if name not in files:
                store.store(group=group, name=name, node=option_defaults(group, name),
                            provider="regfw")  # fmt: skip
