"""Errors raised by the test-server harness; each names the cause and the fix."""

from __future__ import annotations


class BinaryNotFoundError(FileNotFoundError):
    """A server binary the harness needs is not installed."""


class ServerStartError(RuntimeError):
    """A server process exited or never became ready; the message carries its log tail."""
