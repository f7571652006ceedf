"""scripts/setup-windows.ps1, read by a PowerShell parser (tree-sitter's PowerShell grammar:
no PowerShell runs on Morgan's build machines). It parses without an error; -WhatIf holds
every change back; its steps run in the documented order and each is defined; the
setup-linux.sh it runs in WSL takes every option it passes; and the host it makes is the
stack file's Windows host (Docker at tcp://ADDRESS:2376 with TLS, the plan's ports)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache

import pytest
import tree_sitter_powershell
from tree_sitter import Language, Node, Parser, Tree

from infra.config import load_stack_file
from infra.deployment import build_deployment
from infra.host_ports import DOCKER_TLS, firewall_ports
from infra.placement import make_plan
from tests.infra.conftest import ROOT

pytestmark = pytest.mark.unit

SCRIPT = ROOT / "scripts" / "setup-windows.ps1"
LINUX = ROOT / "scripts" / "setup-linux.sh"
STEPS = [
    "Assert-Prerequisites", "Install-Wsl", "Set-MirroredNetworking", "Install-Distribution",
    "Enable-Systemd", "Test-NvidiaFromWsl", "Invoke-SetupLinux", "Open-Firewall",
    "Register-KeepAlive",
]  # fmt: skip
# Commands that change the machine: each must sit under `if ($PSCmdlet.ShouldProcess(...))`.
CHANGES = {
    "Set-Content", "New-Item", "Copy-Item", "New-NetFirewallRule", "Remove-NetFirewallRule",
    "New-NetFirewallHyperVRule", "Remove-NetFirewallHyperVRule", "Register-ScheduledTask",
    "Start-ScheduledTask", "Invoke-Wsl",
}  # fmt: skip


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_powershell.language()))


def _parse(source: bytes) -> Tree:
    return _parser().parse(source)


def _text(node: Node) -> str:
    return node.text.decode() if node.text is not None else ""


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _commands(tree: Tree) -> Iterator[tuple[str, Node]]:
    for node in _walk(tree.root_node):
        name = node.child_by_field_name("command_name") if node.type == "command" else None
        if name is not None:
            yield _text(name), node


def _functions(tree: Tree) -> dict[str, Node]:
    found = {}
    for node in _walk(tree.root_node):
        if node.type == "function_statement":
            name = next(c for c in node.children if c.type == "function_name")
            found[_text(name)] = node
    return found


def _errors(tree: Tree) -> list[str]:
    return [f"{n.start_point.row + 1}:{n.start_point.column + 1} {_text(n)[:60]!r}"
            for n in _walk(tree.root_node) if n.type == "ERROR" or n.is_missing]  # fmt: skip


def test_the_script_parses() -> None:
    tree = _parse(SCRIPT.read_bytes())
    assert _errors(tree) == []


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("if (Test-Wsl @('--status')) {", "if (Test-Wsl @('--status') {"),  # a parenthesis
        ("$RuleName = 'Morgan fleet'", "$RuleName = 'Morgan fleet"),  # an unclosed string
        ("    return $list\n}", "    return $list\n"),  # a function never closed
    ],
    ids=["parenthesis", "string", "brace"],
)
def test_the_parser_finds_a_broken_script(good: str, bad: str) -> None:
    text = SCRIPT.read_text()
    assert good in text
    assert _errors(_parse(text.replace(good, bad, 1).encode()))


def test_whatif_holds_every_change_back() -> None:
    tree = _parse(SCRIPT.read_bytes())
    binding = next(n for n in _walk(tree.root_node) if n.type == "attribute"
                   and _text(n).startswith("[CmdletBinding"))  # fmt: skip
    assert "SupportsShouldProcess" in _text(binding)
    checked = []
    for name, node in _commands(tree):
        if name not in CHANGES:
            continue
        guards = [a for a in _ancestors(node) if a.type == "if_statement"
                  and "$PSCmdlet.ShouldProcess(" in _text(a.child_by_field_name("condition"))
                  ]  # fmt: skip
        line = node.start_point.row + 1
        assert guards, f"line {line}: {name} runs even under -WhatIf"
        checked.append(name)
    assert set(checked) == CHANGES


def _ancestors(node: Node) -> Iterator[Node]:
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def test_the_steps_run_in_order_and_each_is_defined() -> None:
    text = SCRIPT.read_text()
    tree = _parse(text.encode())
    table = text[text.index("$Steps = @(") :]
    assert re.findall(r"Run = \{ ([A-Za-z-]+) \}", table) == STEPS
    defined = _functions(tree)
    assert set(STEPS) <= defined.keys()
    called = {name for name, _node in _commands(tree)}
    helpers = {n for n in defined if n not in STEPS}
    assert helpers <= called, f"defined but never called: {helpers - called}"


def test_setup_linux_takes_every_option_it_passes() -> None:
    tree = _parse(SCRIPT.read_bytes())
    body = _text(_functions(tree)["Invoke-SetupLinux"])
    passed = set(re.findall(r"'(--[a-z-]+)'", body)) - {"--distribution", "--user"}
    assert {
        "--name",
        "--address",
        "--authorized-key",
        "--docker-tls",
        "--ports",
        "--dry-run",
    } == passed
    accepted = set(re.findall(r"(--[a-z-]+)\)", LINUX.read_text()))
    assert passed <= accepted, passed - accepted


def test_the_host_it_makes_is_the_stack_files_windows_host() -> None:
    plan = make_plan(load_stack_file(ROOT / "stacks" / "Pulumi.homelab.yaml"))
    windows = next(h for h in plan.hosts if h.os == "windows")
    assert windows.docker == f"tcp://{windows.address}:2376" and windows.docker_tls is not None
    assert DOCKER_TLS in firewall_ports(build_deployment(plan), windows.name)
    text = SCRIPT.read_text()
    assert "'--docker-tls', (ConvertTo-WslPath $DockerTls)" in text
    assert "docker: tcp://${Address}:2376 with docker_tls" in text
    # The Hyper-V firewall rule is scoped to WSL's virtual machines.
    assert "$WslVmCreator = '{40E0AC32-46A5-438A-A0B2-2B479E8F2E90}'" in text
