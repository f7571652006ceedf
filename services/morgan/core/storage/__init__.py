"""Conversation persistence: PostgreSQL (source of truth) and a Redis context cache."""
