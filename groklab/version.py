"""The package version, importable by every layer without importing the top-level API."""

__version__ = "0.1.0"
