#!/bin/sh
# Admin API (FastAPI via uvicorn): /api/proxy/admin/... guarded by X-Admin-Key, /health, /metrics, /docs.
set -eu
if [ -z "${ADMIN_API_KEY:-}" ]; then
  echo "start-api: ADMIN_API_KEY is unset: guarded endpoints will answer 503 until it is set" >&2
fi
exec uvicorn --factory worker.api:create \
  --host "${ADMIN_API_HOST:-127.0.0.1}" --port "${ADMIN_API_PORT:-3000}" \
  --log-level "$(echo "${LOG_LEVEL:-INFO}" | tr 'A-Z' 'a-z')" --no-access-log "$@"
