"""SentenceSplitter: cut a token stream into sentences so speech can start early."""

from __future__ import annotations

import re

# A sentence ends at . ! ? … (plus closing quotes/brackets) followed by white space.
_BOUNDARY = re.compile(r"""(?<=[.!?…])["')\]]*\s+""")


class SentenceSplitter:
    def __init__(self, min_chars: int = 1) -> None:
        self._buffer = ""
        self._min_chars = min_chars

    def feed(self, text: str) -> list[str]:
        """Add streamed text; return the sentences it completed."""
        self._buffer += text
        out: list[str] = []
        while True:
            match = _BOUNDARY.search(self._buffer)
            if match is None:
                break
            sentence = self._buffer[: match.end()].strip()
            if len(sentence) < self._min_chars:
                break
            out.append(sentence)
            self._buffer = self._buffer[match.end() :]
        return out

    def flush(self) -> str | None:
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None
