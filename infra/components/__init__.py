"""Pulumi components, one per concern (type tokens `morgan:<module>:<Type>`)."""
