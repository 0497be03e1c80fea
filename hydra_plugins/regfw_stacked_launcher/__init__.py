"""regfw's stacked launcher: the jobs of a sweep that share a program train as one (on JAX)."""
