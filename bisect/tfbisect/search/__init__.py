"""Searches: the bisection's state, judging, plan, driver and log, and the sweep; no rendering."""
