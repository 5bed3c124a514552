"""Layer 7 — what operators see: the warm-pool status document, health checks, metrics.

- ``pool_status``: pure; the guide's ``warm-pool/status`` document from records and pool settings.

Logger: ``vastkeep.monitoring``.
"""

from vastkeep.monitoring.pool_status import is_leased, primary_instance, warm_pool_status

__all__ = ["is_leased", "primary_instance", "warm_pool_status"]
