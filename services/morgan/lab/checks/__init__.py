"""The checks `morgan verify` runs against a running stack (pytest + testinfra)."""
