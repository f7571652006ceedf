"""The Pulumi program: load the stack config, make the plan, build the fleet, export."""

from __future__ import annotations

from pathlib import Path

import pulumi

from infra.config import parse_stack_config
from infra.fleet import build_fleet
from infra.outputs import export_outputs
from infra.placement import make_plan

config = parse_stack_config(pulumi.Config("morgan").require_object("fleet"))
fleet = build_fleet(make_plan(config), project_root=Path(__file__).resolve().parent.parent)
export_outputs(fleet)
