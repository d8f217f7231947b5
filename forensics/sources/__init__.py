"""Evidence sources, one module each; every one returns canonical DataFrames only.

The registry of names lives in :mod:`forensics.sources.registry` (``SOURCES``).
"""
