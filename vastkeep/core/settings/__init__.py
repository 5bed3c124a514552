"""Settings, read once at start-up into a frozen, validated object.

The environment (and an optional ``.env`` file, read through django-environ) is parsed here and
nowhere else: the library receives plain parameters or this object. A bad value stops start-up with
a :class:`~vastkeep.core.errors.ConfigError` that names the variable, the problem and the expected form,
because a typo found at boot is cheaper than one found at 3 a.m. Secrets are wrapped in
:class:`Secret` so they cannot reach a log line, a repr, a task argument or an exception by accident.

The package, one concern a module: :mod:`.secret` (``Secret``), :mod:`.spec` (how one variable is parsed
and explained), :mod:`.table` (the variables and profiles), :mod:`.model` (the ``Settings`` object),
:mod:`.load` (``load_settings``: environment, ``.env``, profile, cross-variable rules). URL redaction is
:func:`vastkeep.core.redact.redact_url`.
"""

from __future__ import annotations

from vastkeep.core.redact import redact_url
from vastkeep.core.settings.load import cross_check, load_settings
from vastkeep.core.settings.model import SettingRow, Settings
from vastkeep.core.settings.secret import Secret
from vastkeep.core.settings.spec import HTTP_SCHEMES, Spec, expected, parse, problem, shown
from vastkeep.core.settings.table import PROFILES, SPECS

__all__ = [
    "HTTP_SCHEMES", "PROFILES", "SPECS", "SettingRow", "Secret", "Settings", "Spec",
    "cross_check", "expected", "load_settings", "parse", "problem", "redact_url", "shown",
]
