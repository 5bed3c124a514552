#!/bin/sh
# Health of one vastkeep process, for Docker/Kubernetes/systemd: exit 0 healthy, 1 not.
#   healthcheck.sh worker NODE   celery inspect ping of one worker node (e.g. control@$HOSTNAME)
#   healthcheck.sh beat          the scheduled heartbeat task ran within the last 120 s
#   healthcheck.sh api           GET http://$ADMIN_API_HOST:$ADMIN_API_PORT/health is 200 (Redis reachable)
#   healthcheck.sh flower        GET http://127.0.0.1:$FLOWER_PORT/healthcheck is 200
#   healthcheck.sh stack         `vastkeep check` (redis + worker heartbeats + admin API)
set -eu
what="${1:-stack}"
case "$what" in
  worker)
    node="${2:?usage: healthcheck.sh worker NODE}"
    exec celery -A worker inspect ping -d "$node" --timeout "${HEALTHCHECK_TIMEOUT_S:-10}" >/dev/null ;;
  beat)
    exec python - <<'PY'
import sys
from vastkeep.core.clock import SYSTEM_CLOCK
from vastkeep.state.keys import Keys
from vastkeep.state.connection import connect
from vastkeep.core.settings import load_settings
from vastkeep.state.heartbeats import read_heartbeats
from worker.config import resolve_redis_url
s = load_settings()
beats = read_heartbeats(connect(resolve_redis_url(s), retry_attempts=0), Keys(), SYSTEM_CLOCK, ["beat"], max_age_s=120)
sys.exit(0 if "beat" in beats else 1)
PY
    ;;
  api)
    url="http://${ADMIN_API_HOST:-127.0.0.1}:${ADMIN_API_PORT:-3000}/health"
    [ "${ADMIN_API_HOST:-}" = "0.0.0.0" ] && url="http://127.0.0.1:${ADMIN_API_PORT:-3000}/health"
    exec python -c "import sys, urllib.request as u; sys.exit(0 if u.urlopen('$url', timeout=5).status == 200 else 1)" ;;
  flower)
    exec python -c "import sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:${FLOWER_PORT:-5555}/healthcheck', timeout=5).status == 200 else 1)" ;;
  stack)
    exec vastkeep check ;;
  *)
    echo "usage: healthcheck.sh worker NODE | beat | api | flower | stack" >&2; exit 2 ;;
esac
