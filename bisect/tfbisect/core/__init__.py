"""Core: what a run is and what it left (specs, records, outcomes, the catalogue, the store, errors)."""
