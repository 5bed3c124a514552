"""Layer 1 — SSH log collection that never gives up and loses nothing (planned: issue 11).

Logger: ``vastkeep.ssh``.
"""
