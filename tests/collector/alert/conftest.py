"""Alert fixtures: HTTP receivers (see ``alert_receivers``) and settings in the test's tmp folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from alert_receivers import Behaviour, Receiver, ok, serve


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[Behaviour], Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def make(behaviour: Behaviour = ok) -> Receiver:
        receiver = Receiver(behaviour=behaviour)
        servers.append(serve(receiver))
        return receiver

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Any]:
    """``Settings`` with ``data_dir`` in the test's tmp folder and an optional rules file (YAML text)."""
    from veil_collector.config import Settings

    def make(rules_yaml: str | None = None, data_dir: Path | None = None) -> Settings:
        rules_file = None
        if rules_yaml is not None:
            rules_file = tmp_path / "rules.yaml"
            rules_file.write_text(rules_yaml)
        return Settings(data_dir=data_dir or tmp_path / "veil", alert_rules_file=rules_file)

    return make
