"""The ONNX embedder gives what sentence-transformers gives for the bundled MiniLM."""
# ruff: noqa: RUF001  (sentences in many scripts on purpose)

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from morgan.core.memory import onnx_export
from morgan.core.memory.embedder import EmbedderError, SentenceEmbedder, ensure_onnx_dir

pytestmark = pytest.mark.integration

SENTENCES = [
    "Turn on the kitchen lights.",
    "What's the weather like tomorrow morning?",
    "Set a timer for ten minutes.",
    "Remind me to call my mother on Sunday.",
    "Play some quiet jazz in the living room.",
    "How far is the moon from the earth?",
    "My cat likes to sleep on the sofa.",
    "The quarterly tax filing deadline is next week.",
    "Ich möchte morgen früh um sieben Uhr geweckt werden.",
    "Wie spät ist es in Tokio?",
    "¿Dónde está la estación de tren más cercana?",
    "Quelle est la capitale de l'Australie ?",
    "Il pleut des cordes depuis ce matin.",
    "Vorrei prenotare un tavolo per due persone.",
    "Eu gostaria de ouvir as notícias de hoje.",
    "Ik heb honger, wat kunnen we eten?",
    "Привет, как у тебя дела?",
    "今日はとても良い天気ですね。",
    "我想听一首轻松的音乐。",
    "오늘 일정이 어떻게 되나요?",
    "مرحبا، كيف حالك اليوم؟",
    "नमस्ते, आप कैसे हैं?",
    "Γεια σου, τι κάνεις;",
    "Merhaba, bugün hava nasıl?",
    "",
    " ",
    "a",
    "?",
    "ok",
    "...",
    "🙂🙂🙂",
    "12345 67890",
    "hello hello hello hello hello",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "the quick brown fox jumps over the lazy dog",
    "e-mail: someone@example.org, phone +1 555 0100",
    "def main() -> int: return 0",
    "SELECT * FROM conversations WHERE user_id = 'me';",
    "C'est la vie — such is life.",
    "naïve café résumé façade coöperate",
    "Tab\tseparated\tvalues\tand\nnew lines",
    "A sentence with   many    spaces   in   it.",
    "Is it 3 p.m. or 3 a.m. in Sydney right now?",
    "Don't forget: the meeting's at 9:30!",
    " ".join(["Morgan runs on your own machines."] * 40),
    " ".join(f"word{i}" for i in range(600)),
    "long " * 300,
    "Ünïcödé " * 100,
    "The end of a very long reply. " * 30,
    "Goodbye.",
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(onnx_export.bundled_model_dir()), device="cpu")
    return np.asarray(model.encode(SENTENCES, normalize_embeddings=True, batch_size=8))


def test_fifty_sentences_match_sentence_transformers(
    embedder: SentenceEmbedder, reference: np.ndarray
) -> None:
    assert len(SENTENCES) == 50
    ours = np.asarray(embedder.embed_many_sync(SENTENCES))
    assert ours.shape == reference.shape == (50, 384)
    cosine = (ours * reference).sum(axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    worst = int(cosine.argmin())
    assert cosine.min() >= 0.999, f"{SENTENCES[worst][:60]!r}: cosine {cosine[worst]:.5f}"


def test_one_at_a_time_equals_batched(embedder: SentenceEmbedder) -> None:
    batched = np.asarray(embedder.embed_many_sync(SENTENCES[:6]))
    single = np.asarray([embedder.embed_sync(s) for s in SENTENCES[:6]])
    assert np.allclose(batched, single, atol=1e-5)


def test_export_is_cached_by_fingerprint(embedder: SentenceEmbedder) -> None:
    first = ensure_onnx_dir()
    assert ensure_onnx_dir() == first
    assert first.name.endswith(onnx_export.source_fingerprint(onnx_export.bundled_model_dir()))
    assert (first / "model.onnx").stat().st_size > 80_000_000


def test_a_directory_that_is_no_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="neither an ONNX embedder directory"):
        ensure_onnx_dir(tmp_path)
