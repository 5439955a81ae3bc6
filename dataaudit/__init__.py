"""dataaudit: index an image dataset into DuckDB and find what is wrong before training."""

__version__ = "0.1.0"
