"""Layer 1: SSH log collection that never gives up and loses nothing.

The front door of the layer. Pure decisions: :mod:`~vastkeep.ssh.routes` (which way in),
:mod:`~vastkeep.ssh.liveness` (is the peer alive), :mod:`~vastkeep.ssh.decide` (how long to back off),
:mod:`~vastkeep.ssh.lines` (bytes → lines with offsets). I/O around them: :mod:`~vastkeep.ssh.connect`
(paramiko with every deadline, host-key pinning), :mod:`~vastkeep.ssh.logstore` (fenced atomic writes,
reads by offset), :mod:`~vastkeep.ssh.rotation` (truncated/rotated files), :mod:`~vastkeep.ssh.provider_log`
(the provider log-API fallback), :mod:`~vastkeep.ssh.collector` (one run: routes, connect, backoff;
its settings and step deadlines in :mod:`~vastkeep.ssh.config`), :mod:`~vastkeep.ssh.streaming` (one
session's streaming loop),
:mod:`~vastkeep.ssh.flow` (one run under the lease; which instances need a collector).
"""

from vastkeep.ssh.collector import Collector, CollectorState, RunResult, StopReason
from vastkeep.ssh.config import PROVISION_LOG, CollectorConfig
from vastkeep.ssh.connect import HostKeyPins, fingerprint, load_private_key, open_client
from vastkeep.ssh.decide import backing_off_line, backoff_ceiling_s, backoff_delay_s
from vastkeep.ssh.flow import heartbeat_name, wants_collector
from vastkeep.ssh.lines import split_lines
from vastkeep.ssh.liveness import Liveness
from vastkeep.ssh.logstore import DEFAULT_KEEP_BYTES, MAX_READ_LINES, LogLine, LogStore, lease_name
from vastkeep.ssh.provider_log import PROVIDER_FILE, ProviderLog
from vastkeep.ssh.routes import Route, routes_for, ssh_routes

__all__ = ["DEFAULT_KEEP_BYTES", "MAX_READ_LINES", "PROVIDER_FILE", "PROVISION_LOG", "Collector",
           "CollectorConfig", "HostKeyPins", "Liveness", "LogLine", "LogStore", "ProviderLog",
           "CollectorState", "Route", "RunResult", "StopReason",
           "backing_off_line", "backoff_ceiling_s", "backoff_delay_s", "fingerprint",
           "heartbeat_name", "lease_name", "load_private_key", "open_client", "routes_for", "split_lines",
           "ssh_routes",
           "wants_collector"]
