"""Pure mappings: vLLM requests/outputs, stop strings, incremental decoding, text and audio
framing. No model, no server."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

import numpy as np
import pytest
import soundfile as sf
from morgan.llm.engine import GenerationParams
from morgan.llm.llamacpp_engine import HoldBackEnd
from morgan.llm.prompt import IncrementalDecoder
from morgan.llm.service import StopStringFilter, stop_list
from morgan.llm.vllm_engine import VLLMEngine, VLLMOutputMapper, sampling_params_kwargs, vllm_prompt
from morgan.models.errors import ModelRequestError
from morgan.stt.audio import sniff_format
from morgan.tts.audio import wav_bytes, wav_header
from morgan.tts.text import has_speakable_text, split_sentences

pytestmark = pytest.mark.unit


def test_sampling_params_follow_the_request() -> None:
    params = GenerationParams(max_tokens=64, temperature=0.2, top_p=0.9, stop=("\n\n",), seed=7)
    assert sampling_params_kwargs(params) == {
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "n": 1,
        "stop": ["\n\n"],
        "seed": 7,
    }


def test_min_tokens_maps_to_vllms_min_tokens() -> None:
    kwargs = sampling_params_kwargs(GenerationParams(max_tokens=5, temperature=0.7, min_tokens=2))
    assert kwargs["min_tokens"] == 2


def test_llamacpp_end_tokens_held_back_until_min_tokens_are_out() -> None:
    hold = HoldBackEnd({3, 7}, min_tokens=2)
    scores = np.zeros(10, dtype=np.float32)
    masked = hold(np.array([1, 2]), scores.copy())
    assert np.isneginf(masked[[3, 7]]).all() and np.isfinite(np.delete(masked, [3, 7])).all()
    hold.generated = 2
    assert np.isfinite(hold(np.array([1, 2]), scores.copy())).all()


def test_greedy_sampling_drops_top_p_and_leaves_out_unset_fields() -> None:
    kwargs = sampling_params_kwargs(GenerationParams(max_tokens=5, temperature=0.0, top_p=0.5))
    assert kwargs == {"max_tokens": 5, "temperature": 0.0, "top_p": 1.0, "n": 1}


@dataclass
class CompletionOutput:  # the fields vllm.CompletionOutput carries that the mapper reads
    text: str
    token_ids: list[int]
    finish_reason: str | None = None


@dataclass
class RequestOutput:  # likewise for vllm.RequestOutput
    outputs: list[CompletionOutput]
    finished: bool = False
    prompt_token_ids: list[int] = field(default_factory=list)


def test_cumulative_vllm_outputs_become_deltas_with_token_counts() -> None:
    mapper = VLLMOutputMapper()
    steps = [
        RequestOutput([CompletionOutput("Hel", [1])]),
        RequestOutput([CompletionOutput("Hello", [1, 2])]),
        RequestOutput([CompletionOutput("Hello world", [1, 2, 3], "stop")], finished=True),
    ]
    chunks = [mapper.chunk(step) for step in steps]
    assert [c.text for c in chunks] == ["Hel", "lo", " world"]
    assert [c.completion_tokens for c in chunks] == [1, 2, 3]
    assert [c.finish_reason for c in chunks] == [None, None, "stop"]


def test_vllm_length_and_abort_finish_reasons() -> None:
    mapper = VLLMOutputMapper()
    last = mapper.chunk(RequestOutput([CompletionOutput("ab", [1, 2], "length")], True))
    assert last.finish_reason == "length"
    aborted = VLLMOutputMapper().chunk(RequestOutput([CompletionOutput("", [], "abort")], True))
    assert aborted.finish_reason == "stop"


def test_vllm_prompt_and_engine_args(tmp_path: object) -> None:
    assert vllm_prompt([5, 6]) == {"prompt_token_ids": [5, 6]}
    from pathlib import Path

    engine = VLLMEngine(
        Path("/models/llm/qwen"),
        gpu_memory_utilization=0.5,
        max_model_len=4096,
        served_model_name="qwen",
    )
    assert engine.engine_args() == {
        "model": "/models/llm/qwen",
        "tokenizer": "/models/llm/qwen",
        "gpu_memory_utilization": 0.5,
        "dtype": "auto",
        "max_model_len": 4096,
        "served_model_name": "qwen",
    }
    assert engine.device == "cuda"


def test_vllm_engine_without_vllm_says_what_to_install() -> None:
    from pathlib import Path

    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"morgan\[llm-vllm\]"):
            VLLMEngine(Path("/nonexistent")).load()
    else:  # a GPU host with vllm: loading a missing model fails on the path instead
        with pytest.raises(Exception):  # noqa: B017
            VLLMEngine(Path("/nonexistent")).load()


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        (("END",), ["Hello E", "N", "D and more"], ("Hello ", True)),
        (("\n",), ["line one", "\nline two"], ("line one", True)),
        (("xyz",), ["abc", "def"], ("abcdef", False)),
    ],
)
def test_stop_strings_cut_across_chunks(
    stops: tuple[str, ...], pieces: list[str], expected: tuple[str, bool]
) -> None:
    stop_filter = StopStringFilter(stops)
    out = ""
    for piece in pieces:
        out += stop_filter.feed(piece)
        if stop_filter.stopped:
            break
    if not stop_filter.stopped:
        out += stop_filter.flush()
    assert (out, stop_filter.stopped) == expected


def test_stop_list_limits() -> None:
    assert stop_list("a") == ("a",)
    assert stop_list(None) == ()
    with pytest.raises(ModelRequestError, match="at most 4"):
        stop_list(["a", "b", "c", "d", "e"])
    with pytest.raises(ModelRequestError, match="empty"):
        stop_list([""])


class ByteTokenizer:
    """Token i is byte i: multi-byte characters arrive split across tokens."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def test_incremental_decoder_holds_back_split_utf8() -> None:
    decoder = IncrementalDecoder(ByteTokenizer())
    encoded = list("héllo ✓".encode())
    deltas = [decoder.push([b]) for b in encoded]
    assert "".join(deltas) + decoder.flush() == "héllo ✓"
    assert all("\ufffd" not in d for d in deltas)


def test_sentences_split_and_long_ones_cut_at_commas_then_spaces() -> None:
    assert split_sentences("Hello there. How are you?\nFine!", 100) == [
        "Hello there.",
        "How are you?",
        "Fine!",
    ]
    long = "one, two, three four five six seven eight"
    pieces = split_sentences(long, 12)
    assert all(len(p) <= 12 for p in pieces)
    assert " ".join(pieces).replace(" ,", ",") == long
    assert split_sentences("   \n  ", 50) == []
    assert has_speakable_text("ok") and not has_speakable_text("?!…")


def test_wav_header_and_streamed_wav_decode() -> None:
    samples = np.sin(np.linspace(0, 100, 16000)).astype(np.float32) * 0.5
    complete = wav_bytes(samples, 16000)
    data, rate = sf.read(io.BytesIO(complete))
    assert rate == 16000 and len(data) == 16000
    assert struct.unpack("<I", complete[4:8])[0] == 36 + 32000
    streamed = wav_header(16000) + complete[44:]
    data, rate = sf.read(io.BytesIO(streamed))
    assert rate == 16000 and len(data) == 16000


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02", "ogg"),
        (b"ID3\x04\x00", "mp3"),
        (b"\xff\xfb\x90\x64", "mp3"),
        (b"\x1aE\xdf\xa3webm", None),
        (b"hello world", None),
        (b"", None),
    ],
)
def test_sniff_format(head: bytes, fmt: str | None) -> None:
    assert sniff_format(head) == fmt
