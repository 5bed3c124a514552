#!/bin/sh
# Flower: task monitoring UI + HTTP API (send-task by name, Prometheus /metrics).
# FLOWER_BASIC_AUTH=user:password is read by Flower from the environment (never put it on argv).
set -eu
if [ -z "${FLOWER_BASIC_AUTH:-}" ]; then
  echo "start-flower: FLOWER_BASIC_AUTH (user:password) is required; Flower's API can trigger tasks" >&2
  exit 2
fi
exec celery -A worker flower --address="${FLOWER_ADDRESS:-127.0.0.1}" --port="${FLOWER_PORT:-5555}" "$@"
