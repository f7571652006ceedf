"""Morgan Pulumi program and deployment plan."""
