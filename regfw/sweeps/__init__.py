"""Sweeps and reports: many runs launched by Hydra, and what is written about them together.

Owns the multirun plumbing (`callback`: failed jobs are recorded, the Hydra callback writes the
HParams experiment and the report), Slurm sweeps (`slurm`: jobs Slurm cancels or stops at their
time limit are recorded and resume; the launcher class is in `hydra_plugins/regfw_slurm_launcher`)
and the sweep report (`report`: `summary.csv`, tables, seed aggregates; `plots`; `html`:
`report.html`). May import:
`regfw.training` (lazily: the callback is instantiated in every run, so importing this package
must not import TensorFlow), `regfw.runs`, `regfw.config`, `regfw.registry`, `regfw.errors`.
"""
