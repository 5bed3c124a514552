"""Layer 5 — every instance followed by its own adaptive poll (planned: issue 8).

Logger: ``vastkeep.polling``.
"""
