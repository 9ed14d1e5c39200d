"""The sizes and times that bound what a scenario can make tfbisect keep, read or wait for.

A scenario is untrusted code: whatever it prints or writes, what tfbisect stores, shows and
renders stays within these numbers (the README's "Limits" section lists them).
"""

from __future__ import annotations

# The result document a scenario writes: larger is an `error` record, never read whole.
RESULT_MAX_BYTES = 16 * 1024 * 1024
# The log tail kept in a stored record, and the longest line kept in it.
LOG_TAIL_MAX_BYTES = 64 * 1024
LOG_LINE_MAX_BYTES = 4 * 1024
# The log file on disk: its head and its tail are kept, the middle cut with a marked line.
LOG_FILE_HEAD_BYTES = 4 * 1024 * 1024
LOG_FILE_TAIL_BYTES = 4 * 1024 * 1024
# Strings taken from a document into a record, a report or a summary.
TEXT_MAX_CHARS = 4 * 1024
# The environment variables that hold a GitHub token: a scenario never gets them.
TOKEN_VARIABLES = ("TFBISECT_GITHUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
# After a run ends (or is killed), how long to wait for its output pipe to close before giving up
# on processes that escaped and still hold it.
PIPE_GRACE_SECONDS = 3.0
