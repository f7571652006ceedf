"""Connection URLs with their password added at start: the URL core is configured with
names the server and the user, and the password comes separately (from a secret file,
`MORGAN_CORE_POSTGRES_PASSWORD_FILE`, `MORGAN_CORE_REDIS_PASSWORD_FILE`), so that no
password sits in a container's environment."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


class PasswordTwiceError(ValueError):
    """The URL carries a password and a separate one is set too."""


def with_password(url: str, password: str, *, setting: str) -> str:
    """`url` with `password` in its user part (`scheme://user:password@host...`); `url` as
    it is when `password` is empty. Works for libpq's several hosts (`h1:5432,h2:5432`)."""
    if not password:
        return url
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", parts.netloc
    if ":" in userinfo:
        raise PasswordTwiceError(
            f"{setting} holds a password and a separate one is set too; take the password"
            " out of the URL"
        )
    netloc = f"{userinfo}:{quote(password, safe='')}@{hosts}"
    return urlunsplit(parts._replace(netloc=netloc))
