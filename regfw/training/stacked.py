"""Trains a group of jobs as one vectorized JAX program: the engine of `hydra/launcher=stacked`.

The jobs share one Keras model (the template) and its stateless steps, Keras's own `train_step`
and `test_step`; `jax.vmap` runs them over a leading job axis and `lax.scan` over an epoch's
batches, so one call trains every job for an epoch. What differs per job travels as state: the
weights (each job's model is built under its own seed, as a run alone builds it), dropout's seed
states, the penalties' scales and power-iteration blocks, the optimizer's variables (its learning
rate among them), the metrics, and each job's data (split and order come from `trainer.seed`).
Numbers the template keeps as Python attributes (an optimizer's `weight_decay`, a penalty's
`alpha`) are put in place while the step is traced, so they are per-job inputs of the program too.

A job whose loss goes non-finite stops updating after that step (its state then is kept for the
divergence attribution, as a run alone keeps it); nothing crosses the job axis, so the other jobs
are untouched. After each epoch one more call gives every job's penalty values, and NumPy
computes every job's weight diagnostics and histograms at once; each job's own callbacks
(`regfw.training.callbacks.make_callbacks`) get those and its state as host arrays (`Sources`),
with the few variables they read through the template put in place, so each job folder is a
standalone run's.

The programs are traced from shapes and compiled on another thread while every job's model is
built, its folder recorded and its callbacks made; each epoch's successor runs on the device
while its callbacks run on the host.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from regfw.build import data, models
from regfw.build.attach import attach_penalties
from regfw.config.schedules import multiplier
from regfw.config.terms import term_specs
from regfw.config.yaml_text import to_yaml
from regfw.penalties.base import check_scale
from regfw.runs import atomic, folder
from regfw.training import checkpoints, console, events, hparams, memory, pipeline, seeding
from regfw.training.callbacks import Sources, make_callbacks, penalty_logs
from regfw.training.diagnostics import stacked_model_diagnostics
from regfw.training.divergence import DivergenceGuard
from regfw.training.trainer import build, build_optimizer, final_metrics, objective

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StackedJob:
    """One job of a stack.

    Attributes:
        cfg: The job's config (without Hydra's node).
        run_dir: The job's folder (claimed and recorded by the caller).
        initial_epoch: Epochs already in its checkpoint (0: a fresh run).
        use: Makes the job's Hydra config current (for its record and logs); None outside Hydra.
        logs: Sends log lines to the job's console and `train.log` only (cheaper than `use`).
    """

    cfg: DictConfig
    run_dir: Path
    initial_epoch: int = 0
    use: Any = None
    logs: Any = None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Knobs:
    """The per-job numbers the template keeps as Python attributes, and putting them in place.

    Args:
        template: The compiled template model.
        terms: Its penalty terms.
        jobs: The stack's jobs.
    """

    def __init__(self, template: keras.Model, terms: list[Any], jobs: list[StackedJob]) -> None:
        self.places: list[tuple[Any, str, bool]] = []  # (object, name, whether a dict key)
        columns: list[list[float]] = []
        optimizers = [OmegaConf.to_container(j.cfg.optimizer, resolve=True) for j in jobs]
        for key in sorted(optimizers[0]):
            values = [o.get(key) for o in optimizers]
            varies = all(_is_number(v) for v in values) and len(set(values)) > 1
            if varies and key != "learning_rate" and hasattr(template.optimizer, key):
                self.places.append((template.optimizer, key, False))
                columns.append([float(v) for v in values])
        for index, term in enumerate(terms):
            specs = [term_specs(j.cfg, "penalty")[index][2] for j in jobs]
            for key in term.penalty.params:
                values = [s.get(key) for s in specs]
                if all(_is_number(v) for v in values) and len(set(values)) > 1:
                    self.places.append((term.penalty.params, key, True))
                    columns.append([float(v) for v in values])
        self.values = np.asarray(columns, dtype=np.float32).T.reshape(len(jobs), len(columns))

    @contextlib.contextmanager
    def set(self, values: Any) -> Iterator[None]:
        """Puts one job's `values` in place (tracers while tracing, numbers for its callbacks)."""
        saved = [obj[name] if key else getattr(obj, name) for obj, name, key in self.places]
        try:
            for (obj, name, key), value in zip(self.places, values, strict=True):
                obj.__setitem__(name, value) if key else setattr(obj, name, value)
            yield
        finally:
            for (obj, name, key), value in zip(self.places, saved, strict=True):
                obj.__setitem__(name, value) if key else setattr(obj, name, value)


def _same_split(a: data.Split, b: data.Split) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("x_train", "y_train", "x_val", "y_val")
    )


def _splits(jobs: list[StackedJob]) -> list[data.Split]:
    """Each job's data: loaded once per data config and seed (a grid's jobs mostly share them)."""
    keys = [(to_yaml(j.cfg.data), int(j.cfg.trainer.seed)) for j in jobs]
    loaded: dict[tuple[str, int], data.Split] = {}
    for job, key in zip(jobs, keys, strict=True):
        if key not in loaded:
            loaded[key] = data.load(job.cfg.data, seed=job.cfg.trainer.seed)
    return [loaded[key] for key in keys]


def _initial_state(
    template: keras.Model,
    job: StackedJob,
    layout: _Layout,
    built: dict[str, list[np.ndarray]],
    optimizers: dict[str, list[np.ndarray]],
) -> list[np.ndarray]:
    """A job's starting state: its checkpoint, or its own model built as a run alone builds it.

    The arrays are the trainable, non-trainable and optimizer variables, in the template's order.
    A new model's weights depend on its model config, its seed and its penalties' configs but
    for their scales, which sit in variables of their own: `built` keeps the weights by those,
    and each job gets its own scales (a 16-scale x 4-seed grid builds 4 models). A new
    optimizer's variables (its step, its learning rate, zeroed slots) depend only on its config
    and the weights' shapes, which every job of a stack shares: `optimizers` keeps them by
    config, so a grid builds one optimizer per distinct optimizer config.
    """
    variables = [*template.trainable_variables, *template.non_trainable_variables]
    if job.initial_epoch:
        folder_ = job.run_dir / folder.CHECKPOINT
        state = checkpoints.read_state(folder_)
        with np.load(folder_ / state["state_file"], allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        optimizer = [arrays[f"optimizer/{v.path}"] for v in template.optimizer.variables]
        return [arrays[f"model/{v.path}"] for v in variables] + optimizer
    cfg = job.cfg
    specs = term_specs(cfg, "penalty")
    key = to_yaml({
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "data": [list(cfg.data.input_shape), cfg.data.num_classes],
        "seed": int(cfg.trainer.seed),
        "terms": [[n, p, {k: v for k, v in s.items() if k != "scale"}] for n, p, s in specs],
    })  # fmt: skip
    if key not in built:
        seeding.set_random_seed(cfg.trainer.seed)
        model = models.build(cfg.model, tuple(cfg.data.input_shape), cfg.data.num_classes)
        attach_penalties(model, cfg)
        own = [*model.trainable_variables, *model.non_trainable_variables]
        # Paths may differ by Keras's unique-name suffixes (`seed_generator_1/...`): compare shapes.
        if [(tuple(v.shape), v.dtype) for v in own] != [
            (tuple(v.shape), v.dtype) for v in variables
        ]:
            raise ValueError(f"{job.run_dir}: its model differs from the stack's")
        built[key] = [np.asarray(v) for v in own]
    weights = list(built[key])
    for name, _, spec in specs:  # each term's scale, as `attach_penalties` sets it
        at = layout.scale_at[name]
        weights[at] = np.asarray(check_scale(spec["scale"]), dtype=weights[at].dtype)
    optimizer_key = to_yaml(cfg.optimizer)
    if optimizer_key not in optimizers:
        optimizer = build_optimizer(cfg.optimizer)
        optimizer.build(template.trainable_variables)  # the same shapes as every job's
        optimizers[optimizer_key] = [np.asarray(v) for v in optimizer.variables]
    return weights + optimizers[optimizer_key]


def _build_metrics(template: keras.Model, split: data.Split, batch: int) -> None:
    """Builds the template's layers, loss and metrics for one batch's shapes, as `fit` does.

    Keras's own symbolic build (`compute_output_spec`: shapes only): no op runs eagerly, so none
    is compiled for one use (about 3 s for the default MLP on 2 cores).
    """
    template._symbolic_build(data_batch=(split.x_train[:batch], split.y_train[:batch]))
    template.optimizer.build(template.trainable_variables)


class Program:
    """The compiled epoch and validation of a stack: one call each trains or checks every job.

    `penalties` gives every job's penalty values on its current state (one call for the stack,
    instead of each job's eager `penalty_values` on the template). The three programs are traced
    and lowered when this is made, and compiled by `compiler` (another thread: XLA works without
    the GIL); the first call of each waits for its compilation.

    Args:
        template: The compiled template model (its loss and metrics built).
        terms: Its penalty terms.
        knobs: The per-job numbers it keeps as attributes.
        shared: Whether every job has the same data (else the data has a job axis).
        shapes: The stacked arrays' shapes (`jax.ShapeDtypeStruct`, or None where absent): the
            state `flat` and `metrics` lists, `knob`, `active`, `bad`, the data `x_train`,
            `y_train`, `w`, `x_val`, `y_val`, the validation's `val_order` and `val_tail`, and an
            epoch's batches `order` and `tail`.
        compiler: Runs the compilations.
    """

    def __init__(
        self,
        template: keras.Model,
        terms: list[Any],
        knobs: Knobs,
        shared: bool,
        shapes: dict[str, Any],
        compiler: concurrent.futures.Executor,
    ) -> None:
        import jax
        import jax.numpy as jnp

        trainable = len(template.trainable_variables)
        model_vars = trainable + len(template.non_trainable_variables)

        def train_step(flat, metrics, knob, x, y, w):
            state = (flat[:trainable], flat[trainable:model_vars], flat[model_vars:], metrics)
            with knobs.set(list(knob)):
                logs, (tr, nt, opt, me) = template.train_step(
                    state, (x, y) if w is None else (x, y, w)
                )
            return [*tr, *nt, *opt], list(me), logs

        def test_step(flat, metrics, knob, x, y):
            state = (flat[:trainable], flat[trainable:model_vars], metrics)
            with knobs.set(list(knob)):
                logs, (tr, nt, me) = template.test_step(state, (x, y))
            return [*tr, *nt, *flat[model_vars:]], list(me), logs

        def one(shape: Any, axes: int = 1, rows: int | None = None) -> Any:
            """One job's part of a stacked shape (one batch of its rows, with `rows`)."""
            if shape is None:
                return None
            dims = shape.shape[axes:] if rows is None else (rows, *shape.shape[axes + 1 :])
            return jax.ShapeDtypeStruct(dims, shape.dtype)

        data_axes = 0 if shared else 1
        rows = shapes["order"].shape[2] if shapes["order"].shape[1] else shapes["tail"].shape[1]
        probe = (
            [one(f) for f in shapes["flat"]],
            [one(m) for m in shapes["metrics"]],
            one(shapes["knob"]),
            one(shapes["x_train"], data_axes, rows),
            one(shapes["y_train"], data_axes, rows),
        )
        train_shapes = jax.eval_shape(train_step, *probe, one(shapes["w"], data_axes, rows))[2]
        test_shapes = jax.eval_shape(test_step, *probe)[2]

        def zeros(shapes):
            return {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}

        def job_epoch(flat, metrics, knob, active, bad, x, y, w, order, tail):
            def body(carry, rows):
                flat, metrics, active, bad, logs, index = carry
                new_flat, new_metrics, new_logs = train_step(
                    flat, metrics, knob, x[rows], y[rows], None if w is None else w[rows]
                )
                keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
                flat = [keep(n, o) for n, o in zip(new_flat, flat, strict=True)]
                metrics = [keep(n, o) for n, o in zip(new_metrics, metrics, strict=True)]
                logs = {k: keep(v, logs[k]) for k, v in new_logs.items()}
                finite = jnp.isfinite(new_logs["loss"])
                bad = jnp.where(active & ~finite, index, bad)
                return (flat, metrics, active & finite, bad, logs, index + 1), None

            carry = (flat, metrics, active, bad, zeros(train_shapes), jnp.int32(0))
            carry, _ = jax.lax.scan(body, carry, order)
            if tail is not None:
                carry, _ = body(carry, tail)
            return carry[:5]

        def job_validate(flat, metrics, knob, x, y, order, tail):
            def body(carry, rows):
                return test_step(carry[0], carry[1], knob, x[rows], y[rows]), None

            carry, _ = jax.lax.scan(body, (flat, metrics, zeros(test_shapes)), order)
            if tail is not None:
                carry, _ = body(carry, tail)
            return carry

        variables = [*template.trainable_variables, *template.non_trainable_variables]

        def job_penalties(flat, knob):
            """Each term's scaled value on each of its weights, as `penalty_values` sums them."""
            mapping = list(zip(variables, flat[:model_vars], strict=True))
            with keras.StatelessScope(state_mapping=mapping), knobs.set(list(knob)):
                return [[t.value_of(v) for v in t.variables] for t in terms]

        data = None if shared else 0
        self._epoch = jax.jit(jax.vmap(job_epoch, in_axes=(0, 0, 0, 0, 0, data, data, data, 0, 0)))
        self._validate = jax.jit(jax.vmap(job_validate, in_axes=(0, 0, 0, data, data, None, None)))
        self._penalties = jax.jit(jax.vmap(job_penalties))
        # A `jax.jit` call finds the executable its `lower(...).compile()` made: nothing is
        # compiled twice (`tests/test_stacked.py` checks each program's cache holds one entry).
        state = (shapes["flat"], shapes["metrics"], shapes["knob"])
        arguments = {
            self._epoch: (*state, shapes["active"], shapes["bad"], shapes["x_train"],
                          shapes["y_train"], shapes["w"], shapes["order"], shapes["tail"]),
            self._validate: (*state, shapes["x_val"], shapes["y_val"], shapes["val_order"],
                             shapes["val_tail"]),
            self._penalties: (shapes["flat"], shapes["knob"]),
        }  # fmt: skip
        # Each is compiled as soon as it is lowered, while the next one is traced.
        self._compiled = [compiler.submit(_compile, f.lower(*a)) for f, a in arguments.items()]

    def epoch(self, *args: Any) -> Any:
        """Trains every job for an epoch: `(flat, metrics, active, bad, logs)` after it."""
        self._compiled[0].result()
        return self._epoch(*args)

    def validate(self, *args: Any) -> Any:
        """Every job's validation pass: `(flat, metrics, logs)`."""
        self._compiled[1].result()
        return self._validate(*args)

    def penalties(self, *args: Any) -> Any:
        """Every job's value of every term on each of its weights."""
        self._compiled[2].result()
        return self._penalties(*args)

    def compiled(self) -> str:
        """How the programs were compiled, for the cost line (and a warning if twice)."""
        seconds = sum(future.result() for future in self._compiled)
        names = ("epoch", "validation", "penalties")
        sizes = [f._cache_size() for f in (self._epoch, self._validate, self._penalties)]
        again = [name for name, size in zip(names, sizes, strict=True) if size != 1]
        if again:
            log.warning("the stack's %s program compiled again: its arrays' shapes or types "
                        "differ from those it was lowered for", " and ".join(again))  # fmt: skip
        return f"3 programs compiled beside the setup in {seconds:.1f} s" + (
            f", {' and '.join(again)} compiled again" if again else ""
        )


def _compile(lowered: Any) -> float:
    """Compiles a lowered program (its `jax.jit` finds the executable); returns the seconds."""
    tick = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - tick


def _orders(jobs: list[StackedJob], n: int, batch: int, epoch: int) -> tuple[Any, Any]:
    """Each job's batches of an epoch: full batches (jobs, steps, batch) and the tail (or None)."""
    orders = np.stack([pipeline.epoch_order(n, j.cfg.trainer.seed, epoch) for j in jobs])
    full = (n // batch) * batch
    steps = orders[:, :full].reshape(len(jobs), n // batch, batch).astype(np.int32)
    tail = orders[:, full:].astype(np.int32) if full < n else None
    return steps, tail


def job_bytes(cfg: DictConfig) -> int:
    """An upper estimate of the device memory one job of a stack takes, in bytes.

    Its data (every job may have its own split: `trainer.seed` chooses it), its variables four
    times (weights, gradients and up to two optimizer slots) and the activations of one batch
    three times (forward, backward and the next batch's in flight).
    """
    split = data.load(cfg.data, seed=cfg.trainer.seed)
    arrays = sum(a.nbytes for a in (split.x_train, split.y_train, split.x_val, split.y_val))
    # A throwaway model: the stack clears the session (and collects garbage) when it starts; a
    # full collection here too took about 0.25 s each, the heap holding every job's config. Its
    # variables are made in a stateless scope that leaves them uninitialized: only their shapes
    # count (the initializers' first programs compile later, beside the stack's program).
    keras.backend.clear_session(free_memory=False)
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = models.build(cfg.model, tuple(cfg.data.input_shape), cfg.data.num_classes)
    except ValueError:  # a variable made from a value, not an initializer: made as usual
        keras.backend.clear_session(free_memory=False)
        model = models.build(cfg.model, tuple(cfg.data.input_shape), cfg.data.num_classes)
    variables = sum(int(np.prod(v.shape)) * 4 for v in model.weights) * 4
    try:
        outputs = sum(int(np.prod(layer.output.shape[1:])) for layer in model.layers)
    except (AttributeError, ValueError, TypeError):  # a model without symbolic outputs
        outputs = 0
    keras.backend.clear_session(free_memory=False)
    return arrays + variables + 3 * 4 * cfg.trainer.batch_size * outputs


def available_bytes() -> int:
    """The memory a stack may take: half of what the device has free (on CPU, `MemAvailable`)."""
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // 2
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 // 2
    return 2**62  # unknown: no limit


def train_stack(
    jobs: list[StackedJob], before_training: Any = None, budget: int | None = None
) -> list[dict[str, Any]]:
    """Trains the jobs: same `regfw.sweeps.stacking.stack_key`, same initial epoch, claimed.

    Jobs that would not fit in memory together (`job_bytes` each, `budget` or
    `available_bytes()` in all) train as several stacks, one after another.

    Args:
        jobs: The jobs.
        before_training: Called once everything is built and checked (the data, every job's
            model, the programs traced; they compile meanwhile), before anything is written:
            the caller records the jobs' folders there.
        budget: The bytes a stack may take (default: `available_bytes()`).

    Returns:
        Each job's `metrics.json` contents, in order (also written to its folder).
    """
    need = job_bytes(jobs[0].cfg)
    budget = available_bytes() if budget is None else budget
    size = max(1, budget // max(need, 1))
    if size >= len(jobs):
        return _train_one_stack(jobs, before_training)
    log.info(
        "jobs %s train as stacks of %d: each needs about %.0f MiB and %.0f MiB are available",
        console.spans([j.run_dir.name for j in jobs]), size, need / 2**20, budget / 2**20,
    )  # fmt: skip
    if before_training is not None:
        before_training()
    results = []
    for first in range(0, len(jobs), size):
        results += _train_one_stack(jobs[first : first + size])
    return results


def _train_one_stack(jobs: list[StackedJob], before_training: Any = None) -> list[dict[str, Any]]:
    """Trains the jobs as one program (see `train_stack`)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="regfw-compile") as compiler:
        return _train_stack_with(jobs, before_training, compiler)


def _train_stack_with(
    jobs: list[StackedJob], before_training: Any, compiler: concurrent.futures.Executor
) -> list[dict[str, Any]]:
    """`_train_one_stack` with its compiler thread."""
    import jax
    import jax.numpy as jnp

    start = time.perf_counter()
    first = jobs[0].cfg
    epochs, batch = first.trainer.epochs, first.trainer.batch_size
    initial = jobs[0].initial_epoch
    keras.backend.clear_session(free_memory=True)
    memory.forget_gradient_functions()
    splits = _splits(jobs)
    shared = all(_same_split(splits[0], s) for s in splits[1:])
    seeding.set_random_seed(first.trainer.seed)
    template, terms = build(first)
    _build_metrics(template, splits[0], batch)
    knobs = Knobs(template, terms, jobs)
    layout = _Layout(template, terms)
    # Everything is made on the host and transferred at once: an eager `jnp` op (zeros, a
    # slice, an index) compiles a program of its own for each shape, about 1 s in all.
    host_zeros = [np.zeros((len(jobs), *v.shape), v.dtype) for v in template.metrics_variables]
    class_weight = data.class_weights(
        OmegaConf.to_container(first.trainer, resolve=True)["class_weight"],
        splits[0].y_train,
        splits[0].num_classes,
    )

    def stacked(name: str) -> np.ndarray:
        arrays = [getattr(s, name) for s in splits]
        return arrays[0] if shared else np.stack(arrays)

    arrays = {name: stacked(name) for name in ("x_train", "y_train", "x_val", "y_val")}
    if class_weight is not None:
        table = np.array([class_weight[c] for c in sorted(class_weight)], dtype=np.float32)
        labels = [s.y_train.reshape(-1).astype(np.int64) for s in splits]
        arrays["w"] = table[labels[0]] if shared else np.stack([table[lab] for lab in labels])
    n, n_val = len(splits[0].x_train), len(splits[0].x_val)
    val_full = (n_val // batch) * batch
    arrays["val_order"] = np.arange(val_full, dtype=np.int32).reshape(-1, batch)
    if val_full < n_val:
        arrays["val_tail"] = np.arange(val_full, n_val, dtype=np.int32)
    arrays["knob"] = knobs.values
    arrays["active"] = np.ones(len(jobs), bool)
    arrays["bad"] = np.full(len(jobs), -1, np.int32)
    # The state's shapes are the template's with a job axis: the program is traced and lowered
    # from them now, and compiled on another thread while every job's model is built, the folders
    # are recorded and the callbacks made (XLA releases the GIL: about 2.5 s of 2 cores' work).
    spec = lambda a, *axis: jax.ShapeDtypeStruct((*axis, *a.shape), a.dtype)  # noqa: E731
    order = _orders(jobs, n, batch, initial)
    program = Program(
        template,
        terms,
        knobs,
        shared,
        {
            "flat": [spec(v.value, len(jobs)) for v in layout.variables],
            "metrics": [spec(z) for z in host_zeros],
            **{key: spec(a) for key, a in arrays.items()},
            "w": None if "w" not in arrays else spec(arrays["w"]),
            "val_tail": None if "val_tail" not in arrays else spec(arrays["val_tail"]),
            "order": spec(order[0]),
            "tail": None if order[1] is None else spec(order[1]),
        },
        compiler,
    )
    built: dict[str, list[np.ndarray]] = {}
    optimizers: dict[str, list[np.ndarray]] = {}
    states = [_initial_state(template, j, layout, built, optimizers) for j in jobs]
    host_flat = [np.stack(v) for v in zip(*states, strict=True)]
    flat, zeros, arrays = jax.device_put((host_flat, host_zeros, arrays))
    x, y, x_val, y_val = (arrays[k] for k in ("x_train", "y_train", "x_val", "y_val"))
    w, val_order, val_tail = arrays.get("w"), arrays["val_order"], arrays.get("val_tail")

    if before_training is not None:
        before_training()
    cost = {"setup": time.perf_counter() - start, "compiling and first epoch": 0.0,
            "later epochs": 0.0, "per-job callbacks": 0.0, "saving": 0.0}  # fmt: skip
    tick = time.perf_counter()
    knob, active, bad = arrays["knob"], arrays["active"], arrays["bad"]
    # Every job's checkpoints are written by one thread while the stack trains on (in order).
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="regfw-checkpoints") as writer:
        own = [
            _JobRun(job, template, layout, terms, knobs, knobs.values[i], writer)
            for i, job in enumerate(jobs)
        ]
        for run in own:
            others = console.spans([j.run_dir.name for j in jobs if j is not run.job])
            run.say(f"run folder {console.shown_path(run.job.run_dir)}")
            run.say(f"trains as one program with jobs {others} (hydra/launcher=stacked)"
                    + (f", from epoch {initial}" if initial else ""))  # fmt: skip
        running = [True] * len(jobs)
        cost["per-job callbacks"] += time.perf_counter() - tick

        def dispatch(epoch: int, flat: Any, active: Any, bad: Any) -> tuple[Any, ...]:
            """Starts an epoch, its validation and its penalty values on the device.

            JAX's calls return at once; this returns `(flat, active, bad)` after the epoch and
            what its callbacks read.
            """
            flat = _schedule(flat, layout, terms, jobs, epoch)
            steps, tail = _orders(jobs, n, batch, epoch)
            flat, _, active, bad, train_logs = program.epoch(
                flat, zeros, knob, active, bad, x, y, w, jnp.asarray(steps),
                None if tail is None else jnp.asarray(tail),
            )  # fmt: skip
            flat, _, val_logs = program.validate(
                flat, zeros, knob, x_val, y_val, val_order, val_tail
            )
            penalties = program.penalties(flat, knob)
            return (flat, active, bad), (flat, active, bad, train_logs, val_logs, penalties)

        # The next epoch runs on the device while this one's callbacks run on the host.
        tick = time.perf_counter()
        pending = dispatch(initial, flat, active, bad)
        for epoch in range(initial, epochs):
            state, outputs = pending
            host = jax.device_get(outputs)
            if epoch + 1 < epochs:
                pending = dispatch(epoch + 1, *state)
            summaries = _weight_summaries(template, layout, jobs, host[0])
            cost["later epochs" if epoch > initial else "compiling and first epoch"] += (
                time.perf_counter() - tick
            )
            tick = time.perf_counter()
            for i, run in enumerate(own):
                if not running[i]:
                    continue
                logs = {k: float(v[i]) for k, v in host[3].items()}
                logs.update({f"val_{k}": float(v[i]) for k, v in host[4].items()})
                diverged = not bool(host[1][i])
                run.penalties = penalty_logs(
                    terms, [[value[i] for value in values] for values in host[5]]
                )
                run.diagnostics = summaries[0][i] if summaries[0] else {}
                run.histograms = {path: buckets[i] for path, buckets in summaries[1].items()}
                running[i] = run.epoch_end(
                    epoch, [a[i] for a in host[0]], logs, int(host[2][i]) if diverged else None
                )
            cost["per-job callbacks"] += time.perf_counter() - tick
            tick = time.perf_counter()
            if not any(running):
                break
        tick = time.perf_counter()
        results = [run.finish(initial, time.perf_counter() - start) for run in own]
        cost["saving"] = time.perf_counter() - tick
    log.info(
        "stacked: %d jobs in %.1f s: %s; %s",
        len(jobs),
        time.perf_counter() - start,
        ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cost.items()),
        program.compiled(),
    )
    return results


class _Layout:
    """Where the template's variables sit in a stack's state, the same for every job.

    The state lists the trainable, the non-trainable and the optimizer's variables, in that
    order (`variables`); `position` finds a variable there by identity.

    Args:
        template: The template model, its optimizer built.
        terms: Its penalty terms.

    Attributes:
        keys: `checkpoints.training_state`'s keys with the position of each.
        scale_at: The position of each penalty term's scale, by term name.
        rate_at: The position of the learning rate, or None when it is not a plain variable of
            the one optimizer (a schedule: it is computed from the optimizer's scalars).
        small: The optimizer's scalars a job loads into the template every epoch, so that its
            callbacks read a scheduled learning rate there (none otherwise).
    """

    def __init__(self, template: keras.Model, terms: list[Any]) -> None:
        optimizer_variables = list(template.optimizer.variables)
        self.variables = [
            *template.trainable_variables,
            *template.non_trainable_variables,
            *optimizer_variables,
        ]
        self.position = {id(v): i for i, v in enumerate(self.variables)}
        training = checkpoints.training_state(template).items()
        self.keys = [(key, self.position[id(v)]) for key, v in training]
        self.scale_at = {t.name: self.position[id(t.penalty.scale_variable)] for t in terms}
        optimizer = getattr(template.optimizer, "inner_optimizer", template.optimizer)
        rate = getattr(optimizer, "_learning_rate", None)
        several = hasattr(optimizer, "optimizers")
        self.rate_at = None if several else self.position.get(id(rate))
        first_optimizer = len(self.variables) - len(optimizer_variables)
        self.small = [
            i for i, v in enumerate(self.variables)
            if self.rate_at is None and i >= first_optimizer and len(v.shape) == 0
        ]  # fmt: skip


def _weight_summaries(
    template: keras.Model, layout: _Layout, jobs: list[StackedJob], flat: list[np.ndarray]
) -> tuple[list[dict[str, float]], dict[str, np.ndarray]]:
    """Every job's weight diagnostics and histogram buckets of an epoch, each computed at once.

    Args:
        template: The template model.
        layout: Where its variables sit in `flat`.
        jobs: The stack's jobs.
        flat: The stacked state on the host (`(jobs, ...)` arrays).

    Returns:
        Each job's diagnostics (none if no job logs them) and each weight's `(jobs, 30, 3)`
        buckets by path (none if no job logs histograms).
    """

    def stacked(variable: Any) -> np.ndarray:
        return flat[layout.position[id(variable)]]

    diagnostics: list[dict[str, float]] = []
    if any(j.cfg.trainer.diagnostics for j in jobs):
        weights = {v.path: stacked(v) for v in template.trainable_variables}
        diagnostics = stacked_model_diagnostics(weights)
    histograms = {}
    if any(j.cfg.trainer.histograms for j in jobs):
        for layer in template.layers:
            for weight in layer.weights:
                histograms[weight.path] = events.stacked_histogram_buckets(stacked(weight))
    return diagnostics, histograms


def _schedule(
    flat: list[Any], layout: _Layout, terms: list[Any], jobs: list[StackedJob], epoch: int
) -> list[Any]:
    """Each job's penalty scales for `epoch` (its schedules), in the stacked state."""
    import jax.numpy as jnp

    flat = list(flat)
    for index, term in enumerate(terms):
        specs = [term_specs(j.cfg, "penalty")[index][2] for j in jobs]
        if all((s.get("schedule") or {}).get("name", "constant") == "constant" for s in specs):
            continue
        scales = [s["scale"] * multiplier(s.get("schedule"), epoch) for s in specs]
        position = layout.scale_at[term.name]
        flat[position] = jnp.asarray(np.asarray(scales, dtype=flat[position].dtype))
    return flat


class _JobRun:
    """One job's side of a stack: its callbacks, history, guard and outputs."""

    def __init__(
        self,
        job: StackedJob,
        template: keras.Model,
        layout: _Layout,
        terms: list[Any],
        knobs: Knobs,
        knob: np.ndarray,
        writer: concurrent.futures.Executor | None = None,
    ) -> None:
        self.job, self.template, self.knobs, self.knob = job, template, knobs, knob
        # Its callbacks get the weights, slots, penalty scales and learning rate as host arrays
        # (`Sources`): nothing goes into the template each epoch but the scalars a scheduled
        # learning rate is computed from (`_Layout.small`). A job with callbacks of its own,
        # which may read anything, does not stack (`regfw.sweeps.stacking.why_alone`).
        self.layout = layout
        specs = term_specs(job.cfg, "penalty")
        self.terms = [
            dataclasses.replace(t, base_scale=float(s["scale"]), schedule=s.get("schedule"))
            for t, (_, _, s) in zip(terms, specs, strict=True)
        ]
        self.guard = DivergenceGuard(self.terms)
        self.history = keras.callbacks.History()  # last: it sees what the others added
        # The epoch's penalty values, weight diagnostics and histograms, from the stack.
        self.penalties: dict[str, float] = {}
        self.diagnostics: dict[str, float] = {}
        self.histograms: dict[str, np.ndarray] = {}
        with self._current():
            sources = Sources(
                penalty_values=lambda: dict(self.penalties),
                penalty_scales=lambda: {
                    n: float(self.state[i]) for n, i in layout.scale_at.items()
                },
                learning_rates=(
                    None
                    if layout.rate_at is None
                    else lambda: {"learning_rate": float(self.state[layout.rate_at])}
                ),
                diagnostics=lambda: dict(self.diagnostics),
                histograms=lambda: self.histograms,
                state=lambda: {key: self.state[i] for key, i in layout.keys},
                checkpoint_writer=writer,
            )
            own = make_callbacks(job.cfg, job.run_dir, self.terms, self.guard, sources)
            self.callbacks = keras.callbacks.CallbackList([*own, self.history], model=template)
            self.callbacks.on_train_begin()
        self.state: list[np.ndarray] | None = None

    def say(self, line: str) -> None:
        """Says a line as this job's run would (on the console and in its `train.log`)."""
        with self._logging():
            console.say(line)

    def _logging(self) -> Any:
        return self.job.logs() if self.job.logs else contextlib.nullcontext()

    @contextlib.contextmanager
    def _current(self) -> Iterator[None]:
        with self.job.use() if self.job.use else contextlib.nullcontext():
            yield

    def _load(self, state: list[np.ndarray], which: list[int] | None = None) -> None:
        """Puts this job's state (or its variables at `which`) and its numbers into the template."""
        import jax

        variables = self.layout.variables
        which = range(len(variables)) if which is None else which
        if which:  # one transfer for all (`assign` of a NumPy array converts each on its own)
            for i, value in zip(which, jax.device_put([state[i] for i in which]), strict=True):
                variables[i].assign(value)
        self.state = state

    def epoch_end(
        self, epoch: int, state: list[np.ndarray], logs: dict[str, float], bad_step: int | None
    ) -> bool:
        """Runs the job's callbacks for `epoch`; returns whether the job goes on."""
        self._load(state, self.layout.small if bad_step is None else None)  # all: attribution
        with self._logging(), self.knobs.set([float(v) for v in self.knob]):
            if bad_step is not None:
                where = f"epoch {epoch + 1}, batch {bad_step + 1}"
                self.guard.reason = (
                    f"loss became non-finite at {where}: {self.guard.attribute(logs)}"
                )
            # As in `fit`: the validation pass's callbacks (TensorBoard's evaluation_* tags), then
            # the epoch's.
            self.callbacks.on_test_begin()
            self.callbacks.on_test_end(
                {k.removeprefix("val_"): v for k, v in logs.items() if k.startswith("val_")}
            )
            self.callbacks.on_epoch_end(epoch, logs)
        return bad_step is None

    def finish(self, initial: int, seconds: float) -> dict[str, Any]:
        """Writes `model.keras` (unless diverged) and `metrics.json`; drops the checkpoint."""
        job = self.job
        metrics = {
            "status": "diverged" if self.guard.reason else "completed",
            "epochs_run": initial + len(self.history.epoch),
            "wall_time_s": round(seconds, 3),
            "rss_mb": memory.resident_memory_mb(),
            "output_dir": str(job.run_dir),
            **final_metrics(self.history.history),
        }
        if self.state is not None:
            self._load(self.state)
        with self._current(), self.knobs.set([float(v) for v in self.knob]):
            self.callbacks.on_train_end()
            if self.guard.reason:
                metrics["error"] = self.guard.reason
            else:
                checkpoints.save(self.template, job.run_dir / folder.MODEL)
            metrics["objective"] = objective(job.cfg, metrics)
            atomic.write_json(job.run_dir / folder.METRICS, metrics)
            hparams.write_run(job.run_dir, job.cfg, metrics["status"])
            if not self.guard.reason:
                checkpoints.remove(job.run_dir)
            for line in console.summary_lines(metrics):
                console.say(line)
        return metrics
