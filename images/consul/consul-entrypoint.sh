#!/bin/sh
# Mirrors the official image: `agent ...` and bare flags run a Consul agent
# with the image's data and config directories; anything else runs as given.
set -e
# CONSUL_LOCAL_CONFIG (JSON) becomes a config file, as in the official image.
if [ -n "${CONSUL_LOCAL_CONFIG:-}" ]; then
  printf '%s' "$CONSUL_LOCAL_CONFIG" >/consul/config/local.json
fi
case "$1" in
  agent) shift; set -- consul agent -data-dir=/consul/data -config-dir=/consul/config "$@" ;;
  -*) set -- consul agent -data-dir=/consul/data -config-dir=/consul/config "$@" ;;
  members|kv|catalog|acl|operator|services|version|info|leave|reload|keygen|tls|validate|snapshot)
    set -- consul "$@" ;;
esac
exec "$@"
