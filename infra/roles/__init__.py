"""Container specs by role, each next to its role's config builder (infra/configs/)."""
