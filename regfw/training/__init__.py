"""Training: fitting a built model and writing the run's outputs.

Owns the fit loop and run outputs (`trainer`), the input pipeline (`pipeline`), devices,
strategies and precision (`distribute`), the per-epoch callbacks (`callbacks`: penalty values,
TensorBoard), weight diagnostics (`diagnostics`), the divergence guard (`divergence`),
checkpoints and resuming (`checkpoints`), TensorBoard HParams (`hparams`) and memory over
in-process sweeps (`memory`). May import: `regfw.build`, `regfw.penalties`, `regfw.runs`,
`regfw.config`, `regfw.registry`, `regfw.errors`.
"""
