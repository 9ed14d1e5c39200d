"""Runs: the runner that takes one spec from a request to a stored record."""
