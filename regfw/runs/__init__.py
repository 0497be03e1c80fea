"""Run folders: what regfw writes into them, and how, so that a user's results are never lost.

Owns atomic file writes (`atomic`). Pure Python, no TensorFlow. May import: `regfw.config`,
`regfw.registry`, `regfw.errors`.
"""
