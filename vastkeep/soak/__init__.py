"""The client's-eye soak (``vastkeep soak``): clients lease and use instances while faults strike at random.

- ``plan``: the seeded fault plan (pure): :data:`FAMILIES`, :func:`build_plan`.
- ``counters``: the judges (pure): client-visible failures, must-never counts, what each fault showed.
- ``report``: the JSON report, its verdict and the printed table (pure).
- ``stackrun``: the stack under soak (``vastkeep up``'s children in a temporary folder, canaries planted).
- ``injector``: faults from the simulator's control API and OS signals to the stack's processes.
- ``observe``: the sources the judges read (events, the cloud's request log and ledger, status, logs).
- ``runner``: :class:`SoakRun`, the whole run.
- ``client_workload``: the client program (no ``.py``: it is not library code; it uses Celery and never
  imports vastkeep).

docs/reliability.md explains every figure. Logger: ``vastkeep.soak``.
"""

from vastkeep.soak.plan import FAMILIES, FaultStep, build_plan
from vastkeep.soak.report import build_report, format_table
from vastkeep.soak.runner import CLIENT_PROGRAM, SoakRun
from vastkeep.soak.stackrun import refuse_real_cloud

__all__ = [
    "CLIENT_PROGRAM",
    "FAMILIES",
    "FaultStep",
    "SoakRun",
    "build_plan",
    "build_report",
    "format_table",
    "refuse_real_cloud",
]
