"""The old import path of the per-variable helpers; they live in :mod:`vastkeep.core.settings` now
(``spec``: parse and explain one variable; ``load``: the cross-variable rules; redaction in
:mod:`vastkeep.core.redact`)."""

from vastkeep.core.redact import HTTP_SCHEMES, redact_url
from vastkeep.core.settings.load import cross_check
from vastkeep.core.settings.spec import Spec, expected, parse, problem, shown

__all__ = ["HTTP_SCHEMES", "Spec", "cross_check", "expected", "parse", "problem", "redact_url", "shown"]
