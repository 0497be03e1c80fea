"""Training: fitting a built model and writing the run's outputs.

Owns the fit loop and run outputs (`trainer`), the input pipeline (`pipeline`), devices,
strategies and precision (`distribute`), the per-epoch callbacks (`callbacks`: penalty values,
the epoch line, TensorBoard), what a run says on the console and in `train.log` (`console`),
weight diagnostics (`diagnostics`), the divergence guard (`divergence`), checkpoints and resuming
(`checkpoints`), TensorBoard's custom-scalars layout (`layout`), HParams (`hparams`) and regfw's
own event files (`events`), and memory over in-process sweeps (`memory`). `console`, `layout`,
`hparams` and `events` do not import TensorFlow (the sweep's process uses them). May import:
`regfw.build`, `regfw.penalties`, `regfw.runs`, `regfw.config`, `regfw.registry`, `regfw.errors`.
"""
