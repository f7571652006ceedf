"""Morgan's policy pack. Run: pulumi preview --policy-pack infra/policy"""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)
from rules import RULES, Rule


def _policy(name: str, rule: Rule) -> Any:
    def validate(args: ResourceValidationArgs, report_violation: Any) -> None:
        provider = args.provider.urn if args.provider is not None else ""
        for problem in rule(args.resource_type, args.props, provider):
            report_violation(f"{args.name}: {problem}", None)

    return ResourceValidationPolicy(
        name=name,
        description=(rule.__doc__ or name).strip(),
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


PolicyPack(name="morgan", policies=[_policy(n, r) for n, r in RULES.items()])
