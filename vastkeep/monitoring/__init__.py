"""Layer 7 — what operators see: the warm-pool status document, health checks, metrics.

- ``pool_status``: pure; the guide's ``warm-pool/status`` document from records and pool settings.
- ``health``: the checks shared by ``/health`` and ``vastkeep check`` (Redis, worker heartbeats).
- ``metrics``: the Prometheus text of ``/metrics``, read with a bounded number of Redis calls.
- ``overview``: pure; the text of ``vastkeep status`` (system) and ``vastkeep pool status`` (the pool).

Logger: ``vastkeep.monitoring``.
"""

from vastkeep.monitoring.health import WORKER_MAX_AGE_S, Check, check_redis, check_workers, run_checks
from vastkeep.monitoring.metrics import collect_metrics
from vastkeep.monitoring.overview import (
    INSTANCE_COLUMNS,
    instance_rows,
    pool_document_lines,
    pool_summary_line,
    token_lines,
)
from vastkeep.monitoring.pool_status import is_leased, primary_instance, warm_pool_status

__all__ = ["INSTANCE_COLUMNS", "WORKER_MAX_AGE_S", "Check", "check_redis", "check_workers", "collect_metrics",
           "instance_rows", "is_leased", "pool_document_lines", "pool_summary_line", "primary_instance",
           "run_checks", "token_lines", "warm_pool_status"]
