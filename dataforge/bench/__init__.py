"""dataforge.bench."""
