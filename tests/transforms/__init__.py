"""Tests of dataforge.transforms (a package so its test module names cannot clash with other folders)."""
