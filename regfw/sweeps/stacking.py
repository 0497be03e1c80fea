"""Which jobs of a sweep can train as one vectorized program (`hydra/launcher=stacked`).

Jobs share one program when they differ only in numbers the program can carry per job: the
penalty scales and the numeric parameters of regfw's own penalties, `trainer.seed` (initial
weights, dropout, data order and split), the numeric optimizer hyperparameters
(`learning_rate`, `weight_decay`, `beta_1`, ...), the schedules' numbers, and keys that only
change what is logged (`trainer.verbose`, `monitor`, `histograms`, `diagnostics`,
`checkpoint_every`, `resume`). Everything else (the model, the data, the batch size, the number of
epochs, the optimizer class, which penalties on which weights, the power iterations, the
precision) must be the same. Pure Python on the configs: no TensorFlow.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.config.backend import resolve

LOGGING_ONLY = ("verbose", "monitor", "histograms", "diagnostics", "checkpoint_every", "resume")
STRUCTURAL_TERM_KEYS = ("name", "iterations", "min_ndim", "include", "exclude", "mode")


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _blank(tree: Any, structural: tuple[str, ...] = ()) -> Any:
    """The tree with every number that may vary replaced by a marker of its kind."""
    if isinstance(tree, Mapping):
        return {k: v if k in structural else _blank(v, structural) for k, v in tree.items()}
    return "<number>" if _number(tree) else tree


def stack_key(cfg: DictConfig) -> str:
    """What jobs must share to train as one program (equal keys: stackable together)."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    trainer = {k: v for k, v in tree["trainer"].items() if k not in (*LOGGING_ONLY, "seed")}
    terms = {"penalty": tree["penalty"], **(tree.get("penalties") or {})}
    shape = {
        **{
            k: v
            for k, v in tree.items()
            if k not in ("trainer", "penalty", "penalties", "optimizer")
        },
        "trainer": trainer,
        "optimizer": _blank(tree["optimizer"], ("name", "_target_")),
        "terms": {
            name: (
                term
                if str(term.get("name", "")).startswith("keras_")
                else _blank(term, STRUCTURAL_TERM_KEYS)
            )
            for name, term in terms.items()
        },
    }
    return json.dumps(shape, sort_keys=True, default=str)


def why_alone(cfg: DictConfig) -> str | None:
    """Why a job cannot be stacked with others at all, or None."""
    if resolve(cfg.trainer) != "jax":
        return "the stacked launcher needs trainer.backend=jax"
    if cfg.get("callbacks"):
        return "it has callbacks (each job's callbacks would need its own training loop)"
    if cfg.trainer.strategy != "default":
        return f"trainer.strategy={cfg.trainer.strategy} (one device per stack)"
    if cfg.trainer.jit_compile is False:
        return "trainer.jit_compile=false (a stack is one compiled program)"
    return None


def groups(configs: list[DictConfig], max_stack: int) -> list[list[int]]:
    """Job indices grouped by `stack_key`, in job order, each group at most `max_stack` long."""
    found: dict[str, list[int]] = {}
    for index, cfg in enumerate(configs):
        found.setdefault(stack_key(cfg), []).append(index)
    return [
        members[start : start + max_stack]
        for members in found.values()
        for start in range(0, len(members), max_stack)
    ]
