"""`python -m morgan.core`: load settings (env > Consul KV > YAML > defaults) and serve."""

from __future__ import annotations

import os
from pathlib import Path

from morgan.core.app import build_app
from morgan.core.config import CoreSettings
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.server import run


def main() -> None:
    yaml_path = os.environ.get("MORGAN_CORE_CONFIG")
    loader = ConsulConfigLoader(
        CoreSettings, "core", yaml_path=Path(yaml_path) if yaml_path else None
    )
    settings = loader.load()
    run(build_app(settings, config_loader=loader), settings)


if __name__ == "__main__":
    main()
