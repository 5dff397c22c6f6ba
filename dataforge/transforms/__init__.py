"""dataforge.transforms."""
