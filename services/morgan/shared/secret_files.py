"""Secrets read from files: `<VARIABLE>_FILE` names the file that holds `<VARIABLE>`'s
value (Docker's convention; Consul's CLI reads `CONSUL_HTTP_TOKEN_FILE` the same way), so
that the value stays out of the process's environment."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

FILE_SUFFIX = "_FILE"


class SecretFileError(ValueError):
    """A secret's file cannot be read, or the secret is given twice."""


def read_secret_file(variable: str, path: str) -> str:
    """The file's content without its final line break."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SecretFileError(
            f"{variable}={path}: cannot read the secret's file ({exc.strerror}); the"
            " deploy writes it for the container's user, so check the path and its owner"
        ) from exc
    return text.removesuffix("\n").removesuffix("\r")


def secret_from_env(env: Mapping[str, str], variable: str) -> str | None:
    """`variable`'s value, from the environment or from the file `<variable>_FILE` names."""
    value, path = env.get(variable), env.get(variable + FILE_SUFFIX)
    if value and path:
        raise SecretFileError(
            f"both {variable} and {variable}{FILE_SUFFIX} are set; unset one of them"
        )
    if path:
        return read_secret_file(variable + FILE_SUFFIX, path)
    return value or None
