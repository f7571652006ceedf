"""`morgan verify` of a deployed fleet (`morgan deploy`): pytest checks."""
