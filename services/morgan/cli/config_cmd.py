"""`morgan` sub-commands: config."""

from __future__ import annotations
