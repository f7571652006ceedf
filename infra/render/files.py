"""`morgan render`: docker-stack.yml, its configs, compose-<host>.yml, secrets.env.example."""

from __future__ import annotations

from pathlib import Path

import yaml

from infra.deployment import Deployment, secret_variable
from infra.render.compose import ENV_NOTES, render_compose
from infra.render.swarm import render_swarm, swarm_config_files


def write_renderings(deployment: Deployment, out_dir: str | Path) -> list[Path]:
    """Write docker-stack.yml, its configs, and compose-<host>.yml for every host."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    stack = out / "docker-stack.yml"
    stack.write_text(yaml.safe_dump(render_swarm(deployment), sort_keys=False))
    written.append(stack)
    for rel, content in swarm_config_files(deployment).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for host in deployment.hosts:
        path = out / f"compose-{host}.yml"
        path.write_text(yaml.safe_dump(render_compose(deployment, host), sort_keys=False))
        written.append(path)
    # docker-stack.yml reads every container's secret files from ./secrets/<secret>.
    as_files = {secret_variable(f.secret): f.secret
                for s in deployment.rendered_specs() for f in s.secret_files}  # fmt: skip
    notes = {v: f"# docker-stack.yml also reads it from ./secrets/{name}\n"
             for v, name in as_files.items()}  # fmt: skip
    env_example = out / "secrets.env.example"
    env_example.write_text(
        "# Fill these (e.g. from `pulumi stack output --show-secrets`) and pass with --env-file.\n"
        + "".join(
            f"{ENV_NOTES.get(name, '')}{notes.get(name, '')}{name}=\n"
            for name in deployment.secret_variables()
        )
    )
    written.append(env_example)
    return written
