"""Where the pieces of a reconcile round used to live; kept so their names stay importable from here.

``RoundReport`` lives in :mod:`vastkeep.pool.report`, ``rent_order`` / ``rent_env`` / ``record_from_provider``
in :mod:`vastkeep.pool.renting`, ``with_lease`` in :mod:`vastkeep.pool.aftercare`.
"""

from __future__ import annotations

from vastkeep.pool.aftercare import with_lease
from vastkeep.pool.renting import record_from_provider, rent_env, rent_order
from vastkeep.pool.report import RoundReport

__all__ = ["RoundReport", "record_from_provider", "rent_env", "rent_order", "with_lease"]
