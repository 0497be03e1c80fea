"""Config and validation: composing Hydra configs and checking them before anything runs.

Owns the config tree's location (`compose`), the checks of every group (`schema`, `checks`,
`terms`), the scale schedules' formulas (`schedules`) and the effective config (`effective`: the
config without inert keys). Everything here is pure Python on
OmegaConf objects: it never imports TensorFlow, Keras or JAX, so `--help`, `--cfg job` and config
errors stay fast. Importing it registers Keras's optimizers and callbacks as config options
(`store`). May import: `regfw.registry`, `regfw.errors`.
"""

from regfw.config.store import register

register()
