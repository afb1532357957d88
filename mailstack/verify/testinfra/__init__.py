"""pytest-testinfra tests that `mailstack verify` runs on each host (usable from CI directly)."""
