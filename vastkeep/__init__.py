"""vastkeep: keep rented Vast.ai GPU instances running ComfyUI connected, healthy and ready.

The library never imports Celery; ``worker/`` and ``tasks/`` wrap it.
"""

__version__ = "0.1.0"
