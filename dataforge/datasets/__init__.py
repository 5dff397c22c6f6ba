"""dataforge.datasets."""
