"""The service fabric every Morgan service uses: settings, Consul registration and discovery,
KV configuration, a failover HTTP client, API keys, metrics, JSON logs and one app factory."""
