"""Prints a line, then dies of an uncaught ValueError (exit 1, no document)."""

from __future__ import annotations


def main() -> None:
    print("starting", flush=True)
    raise ValueError("fault table: the real message 42")


if __name__ == "__main__":
    main()
