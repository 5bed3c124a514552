"""Record field names as stored before the provider seam (read-compat only; nothing writes them now).

Records written by earlier versions name four fields after Vast.ai (three of its API's, and
``vast_status``, now ``provider_status``). They are read under their neutral names, so a record survives
the upgrade; the next write stores the neutral names only. This is the one module outside
``vastkeep/providers/`` allowed to spell those words (``tests/unit/test_layering.py`` exempts it by name).
"""

from __future__ import annotations

from collections.abc import Mapping

#: stored name before the seam → the field's name now
RENAMED_RECORD_FIELDS: Mapping[str, str] = {
    "ssh_host": "ssh_proxy_host",
    "ssh_port": "ssh_proxy_port",
    "dph_total": "price_per_hour",
    "vast_status": "provider_status",
}


def upgrade_record_fields(data: Mapping[str, object]) -> dict[str, object]:
    """``data`` with old field names renamed; a neutral name already present wins over its old one."""
    out = {k: v for k, v in data.items() if k not in RENAMED_RECORD_FIELDS}
    for old, new in RENAMED_RECORD_FIELDS.items():
        if old in data and out.get(new) is None:
            out[new] = data[old]
    return out


__all__ = ["RENAMED_RECORD_FIELDS", "upgrade_record_fields"]
