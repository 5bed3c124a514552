"""Shared fixtures: each concern keeps its fixtures in tests/fixtures/<name>.py and lists it here."""

pytest_plugins = [
    "tests.fixtures.loopback_only",
    "tests.fixtures.redis_server",
    "tests.fixtures.state",
    "tests.fixtures.port_servers",
    "tests.fixtures.celery_app",
    "tests.fixtures.vast_stub",
    "tests.fixtures.token_cloud",
    "tests.fixtures.sim",
    "tests.fixtures.proxy",
    "tests.fixtures.chaos",
    "tests.fixtures.admin_api",
    "tests.fixtures.shell",
    "tests.fixtures.hosts",
    "tests.fixtures.timeline",
]


def pytest_collection_modifyitems(items: list) -> None:  # type: ignore[type-arg]
    """The tests marked ``slow`` first, the longest bound (``timeout`` marker) first among them: with two test
    processes stealing work from each other, a long test started last runs alone at the end (the short soak,
    4 minutes, did in CI)."""

    def bound_s(item) -> float:  # type: ignore[no-untyped-def]
        mark = item.get_closest_marker("timeout")
        return float(mark.args[0]) if mark is not None and mark.args else 0.0

    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, -bound_s(item)))
