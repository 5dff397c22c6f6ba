"""dataforge.samplers."""
