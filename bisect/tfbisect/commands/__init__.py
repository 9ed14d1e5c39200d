"""The commands under the command line: one module per `tfbisect` command, each a function that
takes a typed, frozen options object (and a Progress for progress lines) and returns a typed,
frozen result with its exit code.  Nothing here prints: `cli.py` reads the arguments into
options, calls the command and prints what it returns (or, for long commands, what each step
hands to the callback it passes)."""
