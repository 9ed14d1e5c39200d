"""A scenario written before the narrowing existed: it takes `--output` only, so a run of one
probe alone (`--probe NAME`) exits 2 on the unknown option and writes nothing (the narrowing's
fallback: it is traced whole)."""
import argparse
import json

parser = argparse.ArgumentParser()
parser.add_argument("--output", required=True)
args = parser.parse_args()
with open(args.output, "w") as out:
    json.dump({"probes": [{"name": "changed", "kind": "k", "outcome": "match"}]}, out)
