"""`morgan` sub-commands: keys."""

from __future__ import annotations
