"""The one place the product chooses its cloud: the ``PROVIDER`` setting and the provider registry."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vastkeep.core.errors import ConfigError
from vastkeep.core.settings import Settings, load_settings
from vastkeep.providers import StubProvider, known_providers, register_provider, unregister_provider
from vastkeep.providers.registry import ProviderParts, build_provider, builder_for, close_provider


class _Closable(StubProvider):
    closed = False

    def close(self) -> None:
        self.closed = True


class _NoStore:
    """The registry hands the store to the builder and never touches it itself."""


def test_the_setting_defaults_to_vast_and_names_the_known_values_when_wrong() -> None:
    assert load_settings({}, env_file=False).provider == "vast"
    assert load_settings({"PROVIDER": " Vast "}, env_file=False).provider == "vast"
    with pytest.raises(ConfigError) as err:
        load_settings({"PROVIDER": "nimbus"}, env_file=False)
    assert err.value.variable == "PROVIDER"  # type: ignore[attr-defined]
    assert "PROVIDER='nimbus' is not a known value; expected one of vast" in err.value.message


def test_vast_is_built_by_the_token_preflight_module() -> None:
    from vastkeep.tokens.preflight import vast_provider

    assert builder_for("vast") is vast_provider and "vast" in known_providers()


def test_a_registered_cloud_is_built_and_closed_and_forgotten() -> None:
    cloud = _Closable()
    seen: list[ProviderParts] = []

    def builder(parts: ProviderParts) -> _Closable:
        seen.append(parts)
        return cloud

    register_provider("Nimbus", builder)
    try:
        assert "nimbus" in known_providers()
        parts = ProviderParts(replace(Settings(), provider="nimbus"), _NoStore())  # type: ignore[arg-type]
        got = build_provider(parts)
        assert got is cloud and seen == [parts]
        close_provider(got)
        close_provider(None)  # no client: nothing to close
        assert cloud.closed
    finally:
        unregister_provider("nimbus")
    assert "nimbus" not in known_providers()
    with pytest.raises(ConfigError, match=r"PROVIDER='nimbus' is not a known provider; expected one of .*va"):
        builder_for("nimbus")
