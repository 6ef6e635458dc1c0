"""Tests of the pure saga core (no I/O)."""
