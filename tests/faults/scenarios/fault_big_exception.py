"""Dies of a ValueError whose message is 5 MB on one line (exit 1, no document)."""

from __future__ import annotations


def main() -> None:
    raise ValueError("y" * 5_000_000)


if __name__ == "__main__":
    main()
