"""The static Celery beat schedule: task name → interval. Nothing else lives in this file."""

BEAT_SCHEDULE = {
    "vastkeep.system.heartbeat": {"task": "vastkeep.system.heartbeat", "schedule": 30.0},
    "vastkeep.tokens.validate_all": {"task": "vastkeep.tokens.validate_all", "schedule": 600.0},
}
