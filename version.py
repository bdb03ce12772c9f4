"""avdet's version, in the one place it is written: the package (`avdet.__version__`), checkpoints and the wheel's
metadata (pyproject.toml reads this attribute) take it from here. No imports, so any module can import it without
loading the package's API."""

__version__ = "0.1.0"
