"""`morgan models list|import|fetch|catalog` against real folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from morgan.cli.main import app
from morgan.models.directory import resolve_model
from morgan.models.store import fetch_model
from morgan.models.testing import cached_tiny_model
from typer.testing import CliRunner

pytestmark = pytest.mark.unit

runner = CliRunner()


def test_import_detects_kind_validates_and_lists(model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "models"
    empty = runner.invoke(app, ["models", "list", "--model-dir", str(target)])
    assert empty.exit_code == 0 and "no models in" in empty.output

    for kind in ("llm", "stt", "tts"):
        result = runner.invoke(
            app,
            [
                "models",
                "import",
                str(model_dir / kind / "tiny"),
                "--name",
                f"my-{kind}",
                "--model-dir",
                str(target),
            ],
        )
        assert result.exit_code == 0, result.output
        assert (target / kind / f"my-{kind}").is_dir()
        assert resolve_model(target, kind, f"my-{kind}") == target / kind / f"my-{kind}"

    listing = runner.invoke(app, ["models", "list", "--model-dir", str(target)])
    assert listing.output.splitlines() == ["llm: my-llm", "stt: my-stt", "tts: my-tts"]

    again = runner.invoke(
        app,
        [
            "models",
            "import",
            str(model_dir / "stt" / "tiny"),
            "--name",
            "my-stt",
            "--model-dir",
            str(target),
        ],
    )
    assert again.exit_code == 2 and "--force" in again.output
    forced = runner.invoke(
        app,
        [
            "models",
            "import",
            str(model_dir / "stt" / "tiny"),
            "--name",
            "my-stt",
            "--force",
            "--model-dir",
            str(target),
        ],
    )
    assert forced.exit_code == 0
    assert not [p for p in (target / "stt").iterdir() if p.name.startswith(".")]


def test_import_refuses_incomplete_or_wrong_folders(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir / "stt" / "tiny", broken)
    (broken / "model.bin").unlink()
    target = tmp_path / "models"
    wrong_kind = runner.invoke(
        app, ["models", "import", str(broken), "--kind", "stt", "--model-dir", str(target)]
    )
    assert wrong_kind.exit_code == 2
    assert "missing model.bin" in wrong_kind.output
    unknown = runner.invoke(
        app, ["models", "import", str(tmp_path / "nothing"), "--model-dir", str(target)]
    )
    assert unknown.exit_code == 2 and "is not a folder" in unknown.output
    bad_kind = runner.invoke(
        app, ["models", "import", str(broken), "--kind", "video", "--model-dir", str(target)]
    )
    assert bad_kind.exit_code == 2 and "unknown model kind 'video'" in bad_kind.output
    assert not (target / "stt" / "broken").exists()


def test_fetch_offline_says_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["models", "fetch", "whisper-tiny", "--model-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "HF_HUB_OFFLINE" in result.output and "morgan models import" in result.output
    unknown = runner.invoke(app, ["models", "fetch", "gpt-9", "--model-dir", str(tmp_path)])
    assert unknown.exit_code == 1 and "unknown model 'gpt-9'" in unknown.output
    no_kind = runner.invoke(
        app, ["models", "fetch", "someone/some-model", "--model-dir", str(tmp_path)]
    )
    assert no_kind.exit_code == 1 and "--kind" in no_kind.output


def test_fetch_installs_what_the_download_wrote(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls: list[tuple[str, str | None]] = []

    def download_from_local_copy(
        repo_id: str, target: Path, revision: str | None, files: tuple[str, ...] | None
    ) -> None:
        calls.append((repo_id, revision))
        shutil.copytree(model_dir / "stt" / "tiny", target, dirs_exist_ok=True)

    dest = fetch_model("whisper-tiny", tmp_path, revision="main", download=download_from_local_copy)
    assert calls == [("Systran/faster-whisper-tiny", "main")]
    assert dest == tmp_path / "stt" / "whisper-tiny"
    assert (dest / "model.bin").exists()

    def failing_download(
        repo_id: str, target: Path, revision: str | None, files: tuple[str, ...] | None
    ) -> None:
        raise ConnectionError("Name or service not known")

    with pytest.raises(Exception, match="could not download Systran/faster-whisper-base"):
        fetch_model("whisper-base", tmp_path, download=failing_download)
    assert not (tmp_path / "stt" / "whisper-base").exists()


def test_catalog_lists_known_names() -> None:
    result = runner.invoke(app, ["models", "catalog"])
    assert result.exit_code == 0
    assert "Systran/faster-whisper-small" in result.output


def test_fetch_a_gguf_model_downloads_only_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    tiny = cached_tiny_model("llm-gguf") / "tiny.gguf"
    asked: list[tuple[str, tuple[str, ...] | None]] = []

    def download_one_file(
        repo_id: str, target: Path, revision: str | None, files: tuple[str, ...] | None
    ) -> None:
        asked.append((repo_id, files))
        assert files is not None
        shutil.copy(tiny, target / files[0])

    dest = fetch_model("qwen2.5-0.5b-instruct-q4", tmp_path, download=download_one_file)
    assert asked == [("Qwen/Qwen2.5-0.5B-Instruct-GGUF", ("qwen2.5-0.5b-instruct-q4_k_m.gguf",))]
    assert [p.name for p in dest.iterdir()] == ["qwen2.5-0.5b-instruct-q4_k_m.gguf"]
    assert dest == tmp_path / "llm" / "qwen2.5-0.5b-instruct-q4"


def test_import_a_gguf_file(tmp_path: Path) -> None:
    tiny = cached_tiny_model("llm-gguf") / "tiny.gguf"
    result = runner.invoke(app, ["models", "import", str(tiny), "--name", "mine",
                                 "--model-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "llm" / "mine" / "tiny.gguf").read_bytes() == tiny.read_bytes()
    listed = runner.invoke(app, ["models", "list", "--model-dir", str(tmp_path)])
    assert "mine" in listed.output

    not_gguf = tmp_path / "broken.gguf"
    not_gguf.write_bytes(b"<html>rate limited</html>")
    bad = runner.invoke(app, ["models", "import", str(not_gguf), "--model-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "GGUF magic" in bad.output
    assert not (tmp_path / "llm" / "broken").exists()
    wrong_kind = runner.invoke(app, ["models", "import", str(tiny), "--kind", "stt",
                                     "--model-dir", str(tmp_path)])  # fmt: skip
    assert wrong_kind.exit_code == 2 and "is a GGUF LLM, not a stt model" in wrong_kind.output


def test_catalog_gives_gguf_sizes() -> None:
    result = runner.invoke(app, ["models", "catalog"])
    line = next(ln for ln in result.output.splitlines() if ln.startswith("qwen2.5-7b-instruct-q4"))
    assert "download ~4.7 GB, needs ~6.2 GB RAM" in line
