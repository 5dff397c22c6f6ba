"""dataforge.loading."""
