"""``vastkeep up``: the whole system on one machine, supervised.

- ``runtime``: ``Stack``, the children it starts and their shared environment.
- ``stackfile``: the runtime file ``stack.json`` other commands read (``read_stack``, ``text_field``).
- ``embedded_redis``: the ``redis-server`` used when ``REDIS_URL`` is unset (AOF, noeviction, password).
- ``supervisor``: the local watchdog (the guide's Layer 6 for processes): restart with 10/20/40/60 s.

Logger: ``vastkeep.stack``.
"""

from vastkeep.stack.runtime import Stack, simulator_lines
from vastkeep.stack.stackfile import (
    STACK_FILE,
    StackFile,
    json_object,
    pid_alive,
    public_view,
    read_stack,
    text_field,
)
from vastkeep.stack.supervisor import ChildSpec, Supervisor

__all__ = ["STACK_FILE", "ChildSpec", "Stack", "StackFile", "Supervisor", "json_object", "pid_alive",
           "public_view", "read_stack", "simulator_lines", "text_field"]
