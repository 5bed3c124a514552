#!/bin/sh
# Beat: safe to run on every host. The scheduler (celery-redbeat, set in worker/config.py) keeps the
# schedule and a lock in Redis: one beat sends, the others wait for the lock and take over within
# about 30 s when the sender stops or dies. Each entry fires once per interval.
set -eu
exec celery -A worker beat -l "${LOG_LEVEL:-INFO}" "$@"
