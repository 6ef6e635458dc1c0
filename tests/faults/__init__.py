"""Fault campaigns; see conftest.py."""
