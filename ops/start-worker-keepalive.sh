#!/bin/sh
# Keepalive worker: long-lived async shard runners (queue vastkeep.keepalive), one pool slot per shard.
# Prefork so each runner has its own process (and event loop) and time limits are enforced.
set -eu
exec celery -A worker worker \
  -Q vastkeep.keepalive -n "keepalive@%h" \
  -P prefork -c "${VASTKEEP_KEEPALIVE_CONCURRENCY:-${COMFYUI_KEEPALIVE_SHARDS:-2}}" \
  -l "${LOG_LEVEL:-INFO}" "$@"
