#!/bin/sh
# SSH worker: long log collection (queue vastkeep.ssh). A threads pool: collectors wait on the network
# (paramiko blocks), so one process holds SSH_WORKER_CONCURRENCY of them (default 64) instead of 2 prefork
# slots. Celery enforces no time limit on threads; each collector bounds itself (SSH_COLLECT_HOLD_S, capped
# a minute below SSH_COLLECT_TIME_LIMIT_S, and a deadline on every network read).
set -eu
exec celery -A worker worker \
  -Q vastkeep.ssh -n "ssh@%h" \
  -P threads -c "${SSH_WORKER_CONCURRENCY:-64}" \
  -l "${LOG_LEVEL:-INFO}" "$@"
