"""A backup directory on its own (no fleet): what `morgan restore` refuses before it
touches anything, and how the stack's secrets and PKI go back onto a deploy machine.
The backup and restore of a running fleet: tests/chaos/test_backup_restore.py."""

from __future__ import annotations

import io
import json
import re
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
from morgan.cli.main import app
from morgan.deploy import backup as bk
from morgan.deploy import backup_manifest as bm
from morgan.deploy import restore as rs
from morgan.deploy.engine import DeployError
from morgan.deploy.rollout import pki_dir
from morgan.lab.stack import StackPaths, load_config
from typer.testing import CliRunner


@pytest.fixture
def stack_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StackPaths:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return StackPaths(tmp_path / "checkout", "lab")


def _with_secrets(p: StackPaths) -> None:
    p.env_file.parent.mkdir(parents=True)
    p.env_file.write_text("MORGAN_POSTGRES_PASSWORD=s3cret\n")
    pki_dir(p).mkdir(parents=True)
    (pki_dir(p) / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")


def _backup_of_secrets(p: StackPaths, dest: Path) -> Path:
    """A backup directory holding the secrets parts only, as `take` writes them."""
    dest.mkdir(mode=0o700)
    parts = bk._copy_secrets(p, dest, log=lambda _m: None)
    bm.Manifest("lab", "2026-12-07T08:00:00+00:00", parts).write(dest)
    return dest


def test_secrets_and_pki_go_back_onto_a_machine_that_has_none(
    stack_paths: StackPaths, tmp_path: Path
) -> None:
    _with_secrets(stack_paths)
    backup = _backup_of_secrets(stack_paths, tmp_path / "b")
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in backup.iterdir()} == {
        "secrets.env": 0o600, "pki.tar": 0o600, "manifest.json": 0o600}  # fmt: skip
    stack_paths.env_file.unlink()
    (pki_dir(stack_paths) / "ca.pem").unlink()
    pki_dir(stack_paths).rmdir()
    logged: list[str] = []

    rs._restore_secrets(stack_paths, backup, logged.append)

    assert stack_paths.env_file.read_text() == "MORGAN_POSTGRES_PASSWORD=s3cret\n"
    assert stat.S_IMODE(stack_paths.env_file.stat().st_mode) == 0o600
    assert (pki_dir(stack_paths) / "ca.pem").read_text() == "-----BEGIN CERTIFICATE-----\n"
    assert logged == [f"secrets: written to {stack_paths.env_file}",
                      f"PKI: written to {pki_dir(stack_paths)}"]  # fmt: skip


def test_a_machine_with_other_secrets_keeps_them_and_is_told(
    stack_paths: StackPaths, tmp_path: Path
) -> None:
    _with_secrets(stack_paths)
    backup = _backup_of_secrets(stack_paths, tmp_path / "b")
    stack_paths.env_file.write_text("MORGAN_POSTGRES_PASSWORD=rotated\n")
    logged: list[str] = []

    rs._restore_secrets(stack_paths, backup, logged.append)

    assert stack_paths.env_file.read_text() == "MORGAN_POSTGRES_PASSWORD=rotated\n"
    assert "kept this machine's" in logged[0] and "differs from the backup's" in logged[0]


def test_a_backup_is_refused_without_the_stacks_secrets_file(
    stack_paths: StackPaths, tmp_path: Path
) -> None:
    with pytest.raises(bm.BackupError, match=r"secrets file .* is missing"):
        bk._copy_secrets(stack_paths, tmp_path, log=lambda _m: None)


def test_a_directory_without_a_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(bm.BackupError, match="not a Morgan backup: it has no manifest"):
        bm.Manifest.read(tmp_path, "lab")


def test_a_backup_of_another_stack_is_refused(stack_paths: StackPaths, tmp_path: Path) -> None:
    _with_secrets(stack_paths)
    backup = _backup_of_secrets(stack_paths, tmp_path / "b")
    with pytest.raises(bm.BackupError, match="a backup of stack 'lab', not of 'homelab'"):
        bm.Manifest.read(backup, "homelab")


def test_a_part_changed_after_the_backup_is_refused(
    stack_paths: StackPaths, tmp_path: Path
) -> None:
    _with_secrets(stack_paths)
    backup = _backup_of_secrets(stack_paths, tmp_path / "b")
    (backup / "secrets.env").write_text("MORGAN_POSTGRES_PASSWORD=tampered\n")
    with pytest.raises(bm.BackupError, match=re.escape("secrets.env does not match the manifest")):
        bm.Manifest.read(backup, "lab")
    (backup / "secrets.env").write_text("MORGAN_POSTGRES_PASSWORD=s3cret\n")
    bm.Manifest.read(backup, "lab")  # as it was: accepted
    (backup / "pki.tar").unlink()
    with pytest.raises(bm.BackupError, match=re.escape("pki's file pki.tar is missing")):
        bm.Manifest.read(backup, "lab")


def test_a_damaged_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"stack": "lab"}))
    with pytest.raises(bm.BackupError, match=re.escape("manifest.json is damaged")):
        bm.Manifest.read(tmp_path, "lab")


def test_restore_refuses_a_part_it_does_not_put_back(
    stack_paths: StackPaths, tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["restore", "--stack", "lab", "--from", str(tmp_path),
                                      "--part", "consul-snapshot"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "cannot restore consul-snapshot" in result.output
    assert "secrets, postgres, consul-kv" in result.output


def test_restore_from_a_directory_that_is_no_backup_fails_with_the_fix(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["restore", "--stack", "lab", "--from", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "has no manifest.json" in result.output


def test_patronis_cluster_state_is_neither_backed_up_nor_put_back() -> None:
    assert bm.morgans("morgan/auth/keys/0123456789ab")
    assert bm.morgans("morgan/config/core/llm_max_tokens")
    assert not bm.morgans("morgan/patroni/morgan/leader")
    assert not bm.morgans("service/other/leader")


def test_a_backup_of_a_stack_not_deployed_here_fails_and_leaves_no_directory(
    stack_paths: StackPaths, tmp_path: Path
) -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config("lab", root)
    with pytest.raises(DeployError, match="morgan deploy --stack lab"):
        bk.take(config, root, stack_paths, tmp_path / "backups", log=lambda _m: None)
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize("kind", ["climbs out", "a link"])
def test_a_pki_archive_with_anything_but_plain_files_under_pki_is_refused(
    stack_paths: StackPaths, tmp_path: Path, kind: str
) -> None:
    _with_secrets(stack_paths)
    backup = _backup_of_secrets(stack_paths, tmp_path / "b")
    with tarfile.open(backup / "pki.tar", "a") as tar:
        if kind == "climbs out":
            info = tarfile.TarInfo("pki/../../outside.pem")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        else:
            info = tarfile.TarInfo("pki/passwd")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    shutil.rmtree(pki_dir(stack_paths))

    with pytest.raises(bm.BackupError, match="is not a plain file under pki/"):
        rs._restore_secrets(stack_paths, backup, lambda _m: None)
    assert not pki_dir(stack_paths).exists()
    assert not (tmp_path / "outside.pem").exists()
