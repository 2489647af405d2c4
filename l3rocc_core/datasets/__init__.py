"""Loaders of public datasets used for the demo, tests and evaluation."""
