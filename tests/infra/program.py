"""Run the Pulumi program under recording mocks and keep what it made."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pulumi

from infra.fleet import Fleet, build_fleet
from infra.outputs import stack_outputs
from infra.placement import Plan
from tests.infra.mocks import RecordingMocks


@dataclass
class Built:
    plan: Plan
    mocks: RecordingMocks
    outputs: dict[str, tuple[Any, bool]]


def build_under_mocks(plan: Plan) -> Built:
    # Pulumi's mock runtime runs on the thread's current event loop; async tests
    # that ran earlier in the session may have closed or unset it.
    asyncio.set_event_loop(asyncio.new_event_loop())
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="morgan", stack=plan.config.stack, preview=False)
    resolved: dict[str, tuple[Any, bool]] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        fleet: Fleet = build_fleet(plan)
        outputs = stack_outputs(fleet)

        async def settle() -> None:
            for key, value in outputs.items():
                out = pulumi.Output.from_input(value)
                resolved[key] = (await out.future(), bool(await out.is_secret()))

        return pulumi.Output.from_input(asyncio.ensure_future(settle()))

    program()
    return Built(plan=plan, mocks=mocks, outputs=resolved)
