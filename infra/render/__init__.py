"""Renderings of the plan for Docker Swarm and per-host Docker Compose."""
