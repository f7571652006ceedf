"""Chat prompt rendering shared by the engines (both use the model's own chat template)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of the chat with the assistant's turn opened.

    Models without a chat template get a plain ``role: content`` transcript.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
    else:
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        text = "\n".join([*lines, "assistant:"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids]


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas, holding back split UTF-8."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, new_ids: Sequence[int]) -> str:
        self.ids.extend(int(i) for i in new_ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        return self._take(text)

    def flush(self) -> str:
        return self._take(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _take(self, text: str) -> str:
        if not text.startswith(self.emitted):
            # Rare: decoding changed earlier text (tokenizer clean-up); emit only the tail.
            common = 0
            for a, b in zip(text, self.emitted, strict=False):
                if a != b:
                    break
                common += 1
            self.emitted = text[:common]
        delta = text[len(self.emitted) :]
        self.emitted = text
        return delta
