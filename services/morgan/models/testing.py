"""Tiny models with random weights, built offline, for tests and benchmarks.

They exercise the whole serving path (loading, tokenising, decoding, audio
handling) without any model hub. Each builder writes a complete model
directory in the same layout as a real model of its kind:

- ``build_tiny_llm``: a 2-layer Llama with a byte-level BPE tokenizer and a
  ChatML chat template (transformers format, safetensors weights); it never emits
  its end token, so every reply is exactly ``max_tokens`` long.
- ``build_tiny_whisper``: a 1-layer Whisper converted to CTranslate2 with a
  tokenizer that follows Whisper's id layout (faster-whisper format).
- ``build_tiny_vits``: a small VITS with espeak-ng phonemes (Coqui format).
- ``build_tiny_gguf``: the tiny LLM converted to GGUF by llama.cpp's own converter.

``cached_tiny_model(kind)`` builds once per machine and reuses the result,
keyed by the builder version, under ``$MORGAN_TEST_MODEL_CACHE`` (default
``~/.cache/morgan/test-models``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

ModelKind = Literal["llm", "stt", "tts"]

# Bump a version when its builder changes so cached copies are rebuilt.
BUILDER_VERSIONS: dict[str, int] = {"llm": 2, "stt": 2, "tts": 2, "llm-gguf": 1}

_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Morgan is a voice assistant that runs on your own machines.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello, how are you today? I am fine, thank you.",
    "Turn on the lights in the kitchen and set a timer for ten minutes.",
    "What is the weather like tomorrow morning in the city?",
    "Numbers: one two three four five six seven eight nine ten 0123456789.",
]


def _cache_root() -> Path:
    env = os.environ.get("MORGAN_TEST_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "morgan" / "test-models"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_tiny_llm(target: Path) -> Path:
    """Write a tiny random Llama causal LM with tokenizer and chat template to ``target``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    tokenizer.chat_template = _CHATML_TEMPLATE
    tokenizer.save_pretrained(target)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=raw.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=raw.token_to_id("<|im_end|>"),
        pad_token_id=raw.token_to_id("<|endoftext|>"),
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    # Random weights would end a reply at a random point; suppressing the end token makes
    # every reply run to max_tokens, so tests and benchmarks control its length exactly.
    generation = model.generation_config
    if generation is None:
        raise RuntimeError("transformers made no generation config for the tiny LLM; pin it back")
    generation.suppress_tokens = [raw.token_to_id("<|im_end|>")]
    model.save_pretrained(target)
    generation.save_pretrained(target)
    return target


# Whisper's own language token order (the order of ids after <|startoftranscript|>).
_WHISPER_LANGUAGE_TABLE = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no "
    "th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw "
    "gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl "
    "mg as tt haw ln ha ba jw su yue"
)
WHISPER_LANGUAGE_ORDER = _WHISPER_LANGUAGE_TABLE.split()


def _whisper_languages() -> list[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return [code for code in WHISPER_LANGUAGE_ORDER if code in _LANGUAGE_CODES]


def _whisper_tokenizer_json(target: Path) -> list[str]:
    """Write tokenizer.json with Whisper's id layout; return the special tokens in id order."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in alphabet:
        vocab[token] = len(vocab)
    # Whisper has 50257 ordinary tokens (ids 0..50256); fill with readable pieces.
    words = ["Ġhello", "Ġworld", "Ġmorgan", "Ġthe", "Ġlights", "Ġtimer", "Ġon", "Ġoff"]
    index = 0
    while len(vocab) < 50257:
        word = words[index % len(words)] + (str(index // len(words)) if index >= len(words) else "")
        vocab.setdefault(word, len(vocab))
        index += 1
    specials = ["<|endoftext|>", "<|startoftranscript|>"]
    specials += [f"<|{code}|>" for code in _whisper_languages()]
    specials += [
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    specials += [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(tok, special=True) for tok in specials])
    tokenizer.save(str(target / "tokenizer.json"))
    return specials


def build_tiny_whisper(target: Path) -> Path:
    """Write a tiny random multilingual Whisper in CTranslate2 format to ``target``."""
    import ctranslate2.converters
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-whisper-hf-") as tmp:
        hf_dir = Path(tmp)
        specials = _whisper_tokenizer_json(hf_dir)
        ids = {tok: 50257 + i for i, tok in enumerate(specials)}
        vocab_size = 50257 + len(specials)
        torch.manual_seed(0)
        config = WhisperConfig(
            vocab_size=vocab_size,
            num_mel_bins=80,
            d_model=64,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            max_source_positions=1500,
            max_target_positions=448,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|endoftext|>"],
            pad_token_id=ids["<|endoftext|>"],
            decoder_start_token_id=ids["<|startoftranscript|>"],
            suppress_tokens=[],
            begin_suppress_tokens=[220, ids["<|endoftext|>"]],
        )
        model = WhisperForConditionalGeneration(config)
        generation: Any = model.generation_config
        language_tokens = specials[2 : 2 + len(_whisper_languages())]
        generation.lang_to_id = {tok: ids[tok] for tok in language_tokens}
        generation.is_multilingual = True
        generation.no_timestamps_token_id = ids["<|notimestamps|>"]
        generation.alignment_heads = [[0, 0], [0, 1]]
        model.save_pretrained(hf_dir)
        # The converter reads the tokenizer from the model directory.
        _write_whisper_tokenizer_files(hf_dir)
        converter = ctranslate2.converters.TransformersConverter(
            str(hf_dir), copy_files=["tokenizer.json"], load_as_float16=False
        )
        converter.convert(str(target), force=True)
    # Language detection needs the language token ids; write them explicitly rather than
    # depending on how the converter's transformers version reads generation configs.
    ct2_config_path = target / "config.json"
    ct2_config = json.loads(ct2_config_path.read_text())
    ct2_config["lang_ids"] = sorted(ids[tok] for tok in language_tokens)
    ct2_config_path.write_text(json.dumps(ct2_config, indent=2))
    # CTranslate2 treats a Whisper model as multilingual only when its vocabulary holds the
    # empty token, as real Whisper vocabularies do; without it, language detection is refused.
    vocabulary_path = target / "vocabulary.json"
    vocabulary = json.loads(vocabulary_path.read_text())
    vocabulary[50256] = ""
    vocabulary_path.write_text(json.dumps(vocabulary))
    (target / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "WhisperFeatureExtractor",
                "feature_size": 80,
                "sampling_rate": 16000,
                "hop_length": 160,
                "chunk_length": 30,
                "n_fft": 400,
                "n_samples": 480000,
                "nb_max_frames": 3000,
            }
        )
    )
    return target


def _write_whisper_tokenizer_files(hf_dir: Path) -> None:
    """Wrap tokenizer.json as a transformers WhisperTokenizerFast so the converter can read it."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(hf_dir / "tokenizer.json"))
    tokenizer.save_pretrained(hf_dir)


def build_tiny_vits(target: Path) -> Path:
    """Write a tiny random VITS (espeak-ng phonemes, 16 kHz) in Coqui format to ``target``."""
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model_args = VitsArgs(
        hidden_channels=32,
        hidden_channels_ffn_text_encoder=64,
        num_heads_text_encoder=2,
        num_layers_text_encoder=1,
        num_layers_posterior_encoder=1,
        num_layers_flow=1,
        upsample_initial_channel_decoder=32,
        upsample_rates_decoder=[8, 8, 2, 2],
        upsample_kernel_sizes_decoder=[16, 16, 4, 4],
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3, 5]],
        init_discriminator=False,
        # No sampling noise: the same text always gives the same audio (repeatable tests).
        inference_noise_scale=0.0,
        inference_noise_scale_dp=0.0,
    )
    config = VitsConfig(
        model_args=model_args,
        audio=BaseAudioConfig(
            sample_rate=16000, hop_length=256, win_length=1024, fft_size=1024, num_mels=80
        ),
        use_phonemes=True,
        phonemizer="espeak",
        phoneme_language="en-us",
        text_cleaner="phoneme_cleaners",
        compute_input_seq_cache=False,
        phoneme_cache_path=None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # init_from_config still sets up the tokenizer
        model = Vits.init_from_config(config)
    config.model_args.num_chars = model.args.num_chars
    torch.save({"model": model.state_dict(), "config": config.to_dict()}, target / "model.pth")
    config.save_json(str(target / "config.json"))
    return target


def build_tiny_gguf(target: Path) -> Path:
    """The tiny LLM converted to GGUF (f32) by llama.cpp's own converter: ``tiny.gguf``."""
    from morgan.models.gguf_convert import convert_to_gguf, fetch_converter

    lock = Path(__file__).resolve().parents[3] / "uv.lock"
    if not lock.exists():
        raise RuntimeError(f"{lock} is missing: the tiny GGUF is built from a Morgan checkout")
    converter = fetch_converter(lock, _cache_root() / "converter")
    return convert_to_gguf(cached_tiny_model("llm"), target / "tiny.gguf", converter)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "llm-gguf": build_tiny_gguf,
    "llm": build_tiny_llm,
    "stt": build_tiny_whisper,
    "tts": build_tiny_vits,
}


def cached_tiny_model(
    kind: ModelKind | Literal["llm-gguf"], cache_root: Path | None = None
) -> Path:
    """Return the directory of the tiny model of ``kind``, building it once per builder version."""
    root = cache_root or _cache_root()
    final = root / f"{kind}-tiny-v{BUILDER_VERSIONS[kind]}"
    marker = final / ".complete"
    if marker.exists():
        return final
    with _file_lock(root / f".{kind}.lock"):
        if marker.exists():
            return final
        staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
        try:
            BUILDERS[kind](staging)
            staging.chmod(0o755)  # mkdtemp makes it private; images and other users read it
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        marker.write_text("ok\n")
    return final


def install_tiny_model(kind: ModelKind, model_dir: Path, name: str = "tiny") -> Path:
    """Copy the cached tiny model of ``kind`` into ``model_dir/<kind>/<name>`` and return it."""
    source = cached_tiny_model(kind)
    dest = model_dir / kind / name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".complete"))
    return dest
