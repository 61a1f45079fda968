"""Provenant: attribution-native model factory."""
__version__ = "0.1.0"
