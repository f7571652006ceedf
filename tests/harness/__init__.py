"""Real test servers (Consul, PostgreSQL, Redis, Traefik, Prometheus) on loopback.

See docs/development.md; the fixtures live in tests/conftest.py.
"""
