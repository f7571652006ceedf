"""The lab fixtures live in tests/conftest.py (the chaos tests share the same lab)."""
