"""`morgan` sub-commands: stack."""

from __future__ import annotations
