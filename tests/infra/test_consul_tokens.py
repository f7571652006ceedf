"""Which Consul token each container of a plan holds: the management token only on the
Consul servers, every other Consul client its own scoped token (infra.consul_acl)."""

from __future__ import annotations

import json

from infra.configs import consul as consul_cfg
from infra.consul_acl import acl_plan
from infra.model import SecretEnv
from infra.placement import Plan
from infra.specs import build_specs


def _token_secrets(secret_env: tuple[SecretEnv, ...]) -> dict[str, tuple[str, ...]]:
    return {e.name: e.secrets for e in secret_env}


def test_only_the_consul_servers_hold_the_management_token(
    homelab_plan: Plan, lab_plan: Plan
) -> None:
    for plan in (homelab_plan, lab_plan):
        holders = sorted(
            s.role for s in build_specs(plan) if "consul_management_token" in s.secrets
        )
        assert holders == ["consul-server"] * len(plan.consul_servers), plan.config.stack


def test_each_consul_client_holds_its_own_token(lab_plan: Plan) -> None:
    specs = build_specs(lab_plan)
    expected = {
        "core": "consul_token_core",
        "llm": "consul_token_llm",
        "stt": "consul_token_stt",
        "tts": "consul_token_tts",
        "vad": "consul_token_vad",
        "postgres-primary": "consul_token_patroni",
        "postgres-standby": "consul_token_patroni",
    }
    seen = set()
    agents = []
    for spec in specs:
        env = _token_secrets(spec.secret_env)
        # Every container holds its token as a file (CONSUL_HTTP_TOKEN_FILE).
        env.update({f.variable: (f.secret,) for f in spec.secret_files})
        if spec.role == "consul-agent":
            # Each client agent its own host's token.
            assert env["CONSUL_HTTP_TOKEN"] == (f"consul_agent_token_{spec.host}",), spec.name
            agents.append(spec.host)
            continue
        if spec.role not in expected:
            continue
        patroni = spec.role.startswith("postgres")
        variable = "DCS_CONSUL_TOKEN" if patroni else "CONSUL_HTTP_TOKEN"
        assert env[variable] == (expected[spec.role],), spec.name
        seen.add(spec.role)
    assert seen == set(expected)
    assert sorted(agents) == ["h1", "h2", "h3", "h4"]
    # Every token a container holds is one the ACL plan creates.
    held = {n for s in specs for n in s.secrets if n.startswith("consul_") and "token" in n}
    assert held - {"consul_management_token"} == set(acl_plan(lab_plan).secrets())


def test_a_client_agent_has_no_default_token(homelab_plan: Plan) -> None:
    agent = next(s for s in build_specs(homelab_plan) if s.name == "consul-agent-h2")
    step = agent.command[2]
    config = step[step.index("printf '") + 8 : step.index("' ")]
    tokens = json.loads(config)["acl"]["tokens"]
    assert tokens == {"agent": "%s", "config_file_service_registration": "%s"}
    # Its files: its own token and the gossip key, not the management token.
    assert {f.secret for f in agent.secret_files} == {"consul_agent_token_h2", "consul_gossip_key"}


def test_the_dev_stack_keeps_its_loopback_default_token(dev_plan: Plan) -> None:
    server = dev_plan.consul_servers[0]
    assert consul_cfg.default_token_for_anonymous(dev_plan, server, server=True)
    core = next(s for s in build_specs(dev_plan) if s.role == "core")
    assert "CONSUL_HTTP_TOKEN" not in {e.name for e in core.secret_env}
    assert "CONSUL_HTTP_TOKEN" not in {f.variable for f in core.secret_files}
