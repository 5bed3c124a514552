#!/bin/sh
# Control worker: short probes, token checks, pool control (queue vastkeep.control).
# Configuration comes from the environment (see README.md, "Running vastkeep"); secrets never go on argv.
set -eu
exec celery -A worker worker \
  -Q vastkeep.control -n "control@%h" \
  -P prefork -c "${VASTKEEP_CONTROL_CONCURRENCY:-4}" \
  -l "${LOG_LEVEL:-INFO}" "$@"
