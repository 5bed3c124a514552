#!/bin/sh
# Beat: exactly ONE per deployment (two beats send every periodic task twice).
set -eu
home="${VASTKEEP_HOME:-/var/lib/vastkeep}"
mkdir -p "$home"
exec celery -A worker beat -s "$home/celerybeat-schedule" -l "${LOG_LEVEL:-INFO}" "$@"
