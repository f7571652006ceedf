#!/bin/sh
# Mirrors the official image: flags or a traefik sub-command run traefik.
set -e
case "$1" in
  -*) set -- traefik "$@" ;;
  healthcheck|version|help) set -- traefik "$@" ;;
esac
exec "$@"
