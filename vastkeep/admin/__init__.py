"""The admin API (FastAPI, no Celery): ``create_app(settings, ...)``; routers in ``routes_<concern>.py``."""

from vastkeep.admin.app import ADMIN_PREFIX, AdminContext, create_app, get_context
from vastkeep.admin.auth import HEADER, require_admin_key

__all__ = ["ADMIN_PREFIX", "HEADER", "AdminContext", "create_app", "get_context", "require_admin_key"]
