"""Semantic memory: user turns embedded and searched in Qdrant."""
