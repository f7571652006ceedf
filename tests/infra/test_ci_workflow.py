"""The example CI workflow (examples/ci/github-actions/): its shape, and every command it
runs exists with the flags it passes.

Morgan's own commands are parsed by Morgan's CLI; actionlint (with shellcheck) checks the
workflow as GitHub would. The Pulumi CLI cannot be installed here, so its subcommands and
flags are checked against PULUMI_FLAGS, taken from Pulumi's CLI reference.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from morgan.cli.main import app
from typer.testing import CliRunner

from tests.infra.conftest import ROOT

pytestmark = pytest.mark.unit

FOLDER = ROOT / "examples" / "ci" / "github-actions"
WORKFLOW = FOLDER / "morgan-fleet.yml"
ACTIONLINT_CONFIG = FOLDER / "actionlint.yaml"
RUNNER_TEMP = "/runner-temp"
# pulumi <subcommand>: the flags the workflow may pass (Pulumi CLI reference, v3).
PULUMI_FLAGS: dict[tuple[str, ...], set[str]] = {
    ("preview",): {"--stack", "--policy-pack", "--diff", "--non-interactive"},
    ("up",): {"--stack", "--policy-pack", "--yes", "--non-interactive"},
    ("stack", "output"): {"--stack", "--json", "--show-secrets"},
}
SHELL_OPERATORS = {">", ">>", "|", "&&", "||", ";"}


def _workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as true.
    data["on"] = data.pop(True)
    return data


def _commands(job: dict[str, Any], env: dict[str, str]) -> list[tuple[int, list[str], str]]:
    """(step index, argv, redirect target) of every command line the job's steps run,
    with the workflow's variables filled in."""
    values = {**env, "RUNNER_TEMP": RUNNER_TEMP}
    found = []
    for index, step in enumerate(job["steps"]):
        script = step.get("run", "")
        for line in script.replace("\\\n", " ").splitlines():
            line = re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: values.get(m.group(1), m.group(0)), line)
            words = shlex.split(line, comments=True)
            if not words:
                continue
            cut = next((i for i, w in enumerate(words) if w in SHELL_OPERATORS), len(words))
            target = words[cut + 1] if cut < len(words) and words[cut] == ">" else ""
            found.append((index, words[:cut], target))
    return found


def _job(name: str) -> dict[str, Any]:
    return dict(_workflow()["jobs"][name])


def _parse_morgan(args: list[str]) -> tuple[int, str]:
    """`morgan ARGS --help`: the real CLI parses ARGS (an unknown command or option exits 2
    and names it), then prints the command's help instead of running it."""
    result = CliRunner().invoke(app, [*args, "--help"])
    return result.exit_code, result.output


def test_preview_on_pull_requests_and_deploy_on_main() -> None:
    flow = _workflow()
    assert flow["on"]["pull_request"]["branches"] == ["main"]
    assert flow["on"]["push"]["branches"] == ["main"]
    assert flow["permissions"] == {"contents": "read"}
    assert _job("preview")["if"] == "github.event_name == 'pull_request'"
    assert "refs/heads/main" in _job("deploy")["if"]
    assert _job("deploy")["concurrency"] == {"group": "morgan-deploy", "cancel-in-progress": False}
    for name in ("preview", "deploy"):
        assert _job(name)["runs-on"] == ["self-hosted", "linux", "morgan-fleet"]


def test_the_preview_job_never_changes_the_fleet() -> None:
    env = _workflow()["env"]
    argv = [c[1] for c in _commands(_job("preview"), env)]
    pulumi = [a[1:] for a in argv if a[0] == "pulumi"]
    assert pulumi == [["preview", "--stack", "homelab", "--policy-pack", "infra/policy",
                       "--diff", "--non-interactive"]]  # fmt: skip
    assert not any(a[:2] in (["pulumi", "up"], ["pulumi", "destroy"]) for a in argv)
    assert not any(a[0].endswith("morgan") and a[1] in ("deploy", "down") for a in argv)


def test_deploy_then_outputs_then_verify_on_the_same_owner_only_file() -> None:
    env = _workflow()["env"]
    job = _job("deploy")
    commands = _commands(job, env)
    up = next(i for i, (_s, a, _t) in enumerate(commands) if a[:2] == ["pulumi", "up"])
    out = next(
        i for i, (_s, a, _t) in enumerate(commands) if a[:3] == ["pulumi", "stack", "output"]
    )
    verify = next(i for i, (_s, a, _t) in enumerate(commands)
                  if a[0].endswith("morgan") and a[1] == "verify")  # fmt: skip
    assert up < out < verify
    saved = commands[out][2]
    assert saved.startswith(RUNNER_TEMP + "/")
    assert {"--json", "--show-secrets"} <= set(commands[out][1])
    verify_args = commands[verify][1]
    assert verify_args[verify_args.index("--outputs") + 1] == saved
    # The file holds the management token: made owner-only in the step that writes it…
    out_step = commands[out][0]
    assert ["umask", "077"] in [a for s, a, _t in commands[:out] if s == out_step]
    # …and removed whatever happened before.
    last = job["steps"][-1]
    assert last["if"] == "always()"
    assert [a for s, a, _t in commands if s == len(job["steps"]) - 1] == [["rm", "-f", saved]]


def test_every_morgan_command_parses_with_the_real_cli() -> None:
    env = _workflow()["env"]
    seen = []
    for job in _workflow()["jobs"].values():
        for _step, argv, _target in _commands(job, env):
            if not argv[0].endswith("bin/morgan"):
                continue
            code, output = _parse_morgan(argv[1:])
            assert code == 0, (argv, output)
            assert f" {argv[1]} [OPTIONS]" in output, output  # that command's own help
            seen.append(argv[1])
            stack = argv[argv.index("--stack") + 1]
            assert (ROOT / "stacks" / f"Pulumi.{stack}.yaml").is_file(), stack
    assert sorted(seen) == ["plan", "verify"]


def test_a_misspelt_option_would_be_caught() -> None:
    code, output = _parse_morgan(["verify", "--stack", "homelab", "--output", "x.json"])
    assert code == 2
    assert "No such option: --output" in output
    code, output = _parse_morgan(["nosuch", "--stack", "homelab"])
    assert code == 2
    assert "No such command 'nosuch'" in output


def test_pulumi_commands_use_known_flags_and_existing_paths() -> None:
    env = _workflow()["env"]
    for job in _workflow()["jobs"].values():
        for _step, argv, _target in _commands(job, env):
            if argv[0] != "pulumi":
                continue
            words = [w for w in argv[1:] if not w.startswith("-")]
            sub = next(k for k in PULUMI_FLAGS if tuple(words[: len(k)]) == k)
            flags = {w for w in argv if w.startswith("--")}
            assert flags <= PULUMI_FLAGS[sub], (argv, flags - PULUMI_FLAGS[sub])
            if "--policy-pack" in argv:
                pack = ROOT / argv[argv.index("--policy-pack") + 1]
                assert (pack / "PulumiPolicy.yaml").is_file()
            stack = argv[argv.index("--stack") + 1]
            assert (ROOT / "stacks" / f"Pulumi.{stack}.yaml").is_file()


def test_the_deploy_extra_it_installs_is_locked() -> None:
    env = _workflow()["env"]
    installs = [a for job in _workflow()["jobs"].values() for _s, a, _t in _commands(job, env)
                if a[:4] == ["python3", "-m", "uv", "sync"]]  # fmt: skip
    assert installs
    assert all(a[4:] == ["--locked", "--extra", "deploy", "--group", "build"] for a in installs)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deploy = pyproject["project"]["optional-dependencies"]["deploy"]
    assert any(r.startswith("pytest-testinfra") for r in deploy)  # morgan verify's checks
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    morgan = next(p for p in lock["package"] if p["name"] == "morgan")
    assert "deploy" in morgan["optional-dependencies"]
    uv_pin = next(p["version"] for p in lock["package"] if p["name"] == "uv")
    assert env["UV_VERSION"] == uv_pin


def test_the_deploy_extra_alone_runs_verify_and_the_pulumi_program(tmp_path: Path) -> None:
    """What the runner installs is enough: a virtualenv of the deploy extra (from the lock,
    offline, out of uv's cache) runs `morgan verify --help`, imports the Pulumi program's
    modules and collects the fleet checks."""
    from morgan.lab.lock import uv_binary

    venv = tmp_path / "deploy-venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", "/var/cache/morgan/uv-cache"),
        "UV_PYTHON_DOWNLOADS": "never",
    }
    synced = subprocess.run(
        [uv_binary(), "sync", "--locked", "--offline", "--extra", "deploy", "--group", "build",
         "--python", sys.executable],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert synced.returncode == 0, synced.stderr[-2000:]
    installed = {p.name.split("-")[0].lower() for p in venv.glob("lib/python*/site-packages/*")}
    assert "torch" not in installed and "testinfra" in installed
    helped = subprocess.run([str(venv / "bin" / "morgan"), "verify", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "--outputs" in helped.stdout
    program = "import infra.config, infra.fleet, infra.outputs, infra.placement; print('ok')"
    imported = subprocess.run([str(venv / "bin" / "python"), "-c", program], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert imported.stdout.strip() == "ok", imported.stderr[-2000:]
    checks = ROOT / "services" / "morgan" / "deploy" / "checks"
    collected = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "--collect-only", "-q",
         "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(checks), str(checks)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-2000:]
    assert "test_fleet.py::test_text_turn" in collected.stdout


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("actionlint")
    assert binary, "actionlint is not on PATH; scripts/setup builds it"
    assert shutil.which("shellcheck"), "shellcheck is not on PATH; scripts/setup installs it"
    return subprocess.run([binary, "-config-file", str(ACTIONLINT_CONFIG), str(path)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_actionlint_and_shellcheck_pass() -> None:
    result = _actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    text = WORKFLOW.read_text()
    text = text.replace("github.event_name == 'pull_request'", "github.event.nosuch == 'x' &&")
    saved = '"$RUNNER_TEMP/morgan-outputs.json"'
    text = text.replace(f"rm -f {saved}", f"rm -f {saved.strip(chr(34))}")
    broken.write_text(text)
    result = _actionlint(broken)
    assert result.returncode == 1
    assert "[expression]" in result.stdout, result.stdout  # the `if:` cut short
    assert "SC2086" in result.stdout, result.stdout  # shellcheck: the unquoted variable
