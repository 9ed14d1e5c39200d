"""`tfbisect run --interpreter PYTHON`: the spec and tags of a run in an environment made elsewhere
(a tox env).  The environment itself is the "given" backend (envs/backend_given.py), which
`Runner.run_given` makes through the registry for each run; this names what the command needs."""

from __future__ import annotations

from tfbisect.envs.backend_given import spec_for as spec_for
from tfbisect.envs.backend_given import tags as tags
