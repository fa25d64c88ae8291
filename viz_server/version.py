"""The version of viz-server (the package, the results' provenance and the built-in plugins)."""

__version__ = "0.1.0"
