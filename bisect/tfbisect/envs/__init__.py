"""Environments: where a run happens (the interface, venv, Docker, bases, wheels, locks, interpreters)."""
