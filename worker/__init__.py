"""The Celery side of vastkeep: ``celery -A worker worker|beat|flower``."""

from worker.app import app

__all__ = ["app"]
