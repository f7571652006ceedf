"""CrossGuard policy pack with the fleet invariants: pulumi preview --policy-pack infra/policy."""
