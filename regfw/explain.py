"""`python -m regfw.explain <overrides>`: which weights each term touches, without training.

Takes the same overrides as `train.py` and prints every penalty term with the weights it matches,
their shapes, parameter counts and the initial (scaled) penalty value, then the constraint terms
and the weights no penalty touches.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from regfw import cli
from regfw.config import backend
from regfw.config.compose import compose
from regfw.config.terms import term_specs


def _row(path: str, shape: tuple[int, ...], count: int, value: str = "") -> str:
    return f"  {path:<32} {tuple(shape)!s:<18} {count:>10,}  {value}".rstrip()


def explain(cfg: DictConfig) -> str:
    """Builds the model for `cfg` (initial weights, no training) and describes its terms."""
    from keras import ops

    from regfw.build.selection import matches
    from regfw.training import seeding
    from regfw.training.trainer import build

    seeding.set_random_seed(cfg.trainer.seed)
    model, terms = build(cfg)
    weights = model.trainable_variables
    total = sum(int(v.numpy().size) for v in weights)
    lines = [f"model {cfg.model.name}: {len(weights)} trainable weights, {total:,} parameters"]
    for term in terms:
        values = [float(ops.convert_to_numpy(term.value_of(v))) for v in term.variables]
        count = sum(int(v.numpy().size) for v in term.variables)
        schedule = (term.schedule or {}).get("name", "constant")
        lines.append(
            f"penalty term '{term.name}': {term.penalty!r}, schedule {schedule}; "
            f"{len(term.variables)} weights, {count:,} parameters, "
            f"initial penalty {sum(values):.6g}"
        )
        lines += [
            _row(v.path, v.shape, int(v.numpy().size), f"{value:.6g}")
            for v, value in zip(term.variables, values, strict=True)
        ]
        lines += [f"  left out: {entry}" for entry in term.skipped]
    for name, _, spec in term_specs(cfg, "constraint"):
        selection = (spec.get("include"), spec.get("exclude", ()), spec.get("min_ndim", 0))
        chosen = [v for v in weights if matches(v, *selection)]
        lines.append(f"constraint term '{name}': {spec['name']}; {len(chosen)} weights")
        lines += [_row(v.path, v.shape, int(v.numpy().size)) for v in chosen]
    if not terms:
        lines.append("no penalty terms (penalty=none)")
    free = [v.path for v in weights if v.regularizer is None]
    lines.append(f"weights without a penalty: {', '.join(free) if free else 'none'}")
    return "\n".join(lines)


USAGE = """usage: python -m regfw.explain [group=option ...] [key=value ...]

Builds the model train.py would build for the same overrides (initial weights, no training) and
prints each penalty and constraint term with the weights it touches and its initial value."""


def main(argv: Sequence[str] | None = None) -> None:
    """Prints the explanation for `train.py`-style overrides; user errors exit with code 2."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    overrides = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(overrides):
        print(USAGE)
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        cli.fail(f"cannot parse the command line: {' '.join(str(error).split())}")
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps:
        cli.fail(
            f"{sweeps[0]}: explain describes one config, and this is a sweep; give one value "
            "per key (explain each sweep value on its own)"
        )
    problem = cli.reported(lambda: cli.find_problem(overrides, folders=False))
    if problem:
        cli.fail(problem)
    cfg = compose(overrides)
    cli.reported(lambda: backend.use(cfg.trainer))
    cli.import_backend_quietly()
    print(cli.reported(lambda: explain(cfg)))


if __name__ == "__main__":
    main()
