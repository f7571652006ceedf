"""The local lab: image builds, the dev stack on this machine's Docker engine, and its checks."""
