"""Below the releases: narrow a bisection's change point with the builds the index publishes in
between, list what else changed in the environment, and name the changed code the failing probe ran.

One module per job: `builds` (what lies between two releases, and why not more), `dependencies`
(the two locks compared), `traces` (the traced runs, validated and kept), `sources`, `diff`,
`analysis`, `ranking` and `links` (the suspects), `narrower` (the steps in order, through the
callables `wiring` makes from a runner).  The result's log model is `search.narrowlog`: it is a
section of the bisection log.  Nothing here renders words (report/findings.py does).
"""
