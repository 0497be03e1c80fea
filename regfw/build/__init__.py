"""Model and data building: from a checked config to a Keras model with its terms attached.

Owns the data sets (`loaders` read raw arrays, `data` checks, splits and scales them), the models
(`models`), user plugins (`plugins`), which weights a term touches (`selection`), hard constraints
(`constraints`) and attaching penalties and constraints to weights (`attach`). Imports Keras (not
TensorFlow directly). May import: `regfw.penalties`, `regfw.config`, `regfw.registry`,
`regfw.errors`.
"""
