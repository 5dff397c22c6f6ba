"""dataforge.collate."""
