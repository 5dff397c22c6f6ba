"""Tests of dataforge.samplers."""
