"""A tiny GGUF for tests and benchmarks: the tiny test LLM converted by llama.cpp's own
converter (`convert_hf_to_gguf.py`, shipped in the llama-cpp-python sdist with its
`gguf-py`). The sdist is the one uv.lock pins, fetched once and checked against the lock's
hash. The converter fingerprints tokenizers it knows and refuses the tiny model's; it is run
with that check answered "default" (llama.cpp's generic byte-level BPE pre-tokenizer, which
is what the tiny tokenizer uses), and straight to its GPT-2-style BPE vocabulary branch (the
one it reaches for this tokenizer after probing for SentencePiece files it does not have)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

CONVERTER_PACKAGE = "llama-cpp-python"

_WRAPPER = """
import sys
sys.path.insert(0, sys.argv[1] + "/gguf-py")
sys.path.insert(0, sys.argv[1])
import convert_hf_to_gguf as convert
convert.TextModel.get_vocab_base_pre = lambda self, tokenizer: "default"
convert.LlamaModel.set_vocab = convert.LlamaModel._set_vocab_gpt2
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
convert.main()
"""


def locked_sdist(lock_file: Path, package: str = CONVERTER_PACKAGE) -> tuple[str, str, str]:
    """(version, url, sha256) of `package`'s sdist in uv.lock."""
    data = tomllib.loads(lock_file.read_text())
    for entry in data.get("package", []):
        if entry["name"] == package and "sdist" in entry:
            sdist = entry["sdist"]
            return entry["version"], sdist["url"], sdist["hash"].removeprefix("sha256:")
    raise RuntimeError(f"{lock_file} locks no sdist of {package}; run `make lock`")


def fetch_converter(lock_file: Path, cache: Path) -> Path:
    """llama.cpp's converter and gguf-py from the locked sdist, unpacked under `cache`."""
    import httpx

    version, url, sha256 = locked_sdist(lock_file)
    root = cache / f"llama-convert-{version}"
    if (root / "convert_hf_to_gguf.py").exists():
        return root
    archive = cache / url.rsplit("/", 1)[1]
    if not archive.exists() or hashlib.sha256(archive.read_bytes()).hexdigest() != sha256:
        cache.mkdir(parents=True, exist_ok=True)
        with httpx.stream("GET", url, follow_redirects=True, timeout=120) as resp:
            resp.raise_for_status()
            with archive.open("wb") as out:
                for chunk in resp.iter_bytes():
                    out.write(chunk)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != sha256:
            archive.unlink()
            raise RuntimeError(f"{url}: sha256 {digest} is not the locked {sha256}")
    staging = root.with_name(root.name + ".tmp")
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(archive) as tar:
        members = [
            m for m in tar.getmembers()
            if m.name.startswith(prefix + "gguf-py/gguf/")
            or m.name == prefix + "convert_hf_to_gguf.py"
        ]  # fmt: skip
        for member in members:
            member.name = member.name[len(prefix) :]
        tar.extractall(staging, members=members, filter="data")
    staging.rename(root)
    return root


def convert_to_gguf(hf_dir: Path, out: Path, converter: Path) -> Path:
    """Run llama.cpp's converter on a Hugging Face model directory (f32, no quantisation)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", _WRAPPER, str(converter), str(hf_dir),
           "--outfile", str(out), "--outtype", "f32"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-5:])
        raise RuntimeError(f"convert_hf_to_gguf.py failed on {hf_dir}:\n{tail}")
    return out
