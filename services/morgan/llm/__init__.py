"""morgan.llm."""
