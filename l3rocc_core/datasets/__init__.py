"""Loaders of public datasets, and the independent evaluation set, for tests and evaluation."""
