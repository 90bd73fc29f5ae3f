"""Walks of the production path, as an operator walks it (see tests/walk/conftest.py)."""
