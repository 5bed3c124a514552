"""Layer 4 — ComfyUI keepalive for a pool, with a fast crash path (planned: issue 9).

Logger: ``vastkeep.keepalive``.
"""
