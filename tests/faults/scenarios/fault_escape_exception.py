"""Dies of a ValueError whose message holds terminal escape sequences."""

from __future__ import annotations

# Terminal escapes: set the window title, clear the screen, colour, a C1 CSI, backspaces.
EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u009b1m\x08\x08"


def main() -> None:
    raise ValueError("boom " + EVIL)


if __name__ == "__main__":
    main()
