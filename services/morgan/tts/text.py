"""Splitting text into the sentences that are synthesised and streamed one by one."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?…;:])\s+|\n+")


def split_sentences(text: str, max_chars: int) -> list[str]:
    """Sentences of ``text``, none longer than ``max_chars`` (split at commas, then spaces)."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        while len(sentence) > max_chars:
            cut = sentence.rfind(", ", 0, max_chars)
            if cut <= 0:
                cut = sentence.rfind(" ", 0, max_chars)
            if cut <= 0:
                cut = max_chars
            head, sentence = sentence[: cut + 1].strip(), sentence[cut + 1 :].strip()
            if head:
                pieces.append(head)
        if sentence:
            pieces.append(sentence)
    return pieces


def has_speakable_text(text: str) -> bool:
    return any(ch.isalnum() for ch in text)
