#!/bin/sh
# SSH worker: long log collection (queue vastkeep.ssh). Prefork: the only pool (with gevent) that enforces
# time limits, which SSH_COLLECT_TIME_LIMIT_S relies on.
set -eu
exec celery -A worker worker \
  -Q vastkeep.ssh -n "ssh@%h" \
  -P prefork -c "${VASTKEEP_SSH_CONCURRENCY:-2}" \
  -l "${LOG_LEVEL:-INFO}" "$@"
