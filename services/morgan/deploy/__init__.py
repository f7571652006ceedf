"""`morgan deploy`: a stack's deployment rolled out to each host's own Docker daemon."""
