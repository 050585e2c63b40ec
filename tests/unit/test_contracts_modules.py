"""clarion.contracts lists every generated module that defines a service: a proto file with a service that is
missing there would leave its RPCs out of the scope table's test and the edge's routes."""

from __future__ import annotations

import re
from pathlib import Path

from clarion import contracts

PROTOS = Path(__file__).resolve().parents[2] / "protos" / "clarion" / "v1"
_SERVICE = re.compile(r"^service \w+ \{", re.MULTILINE)


def test_every_proto_file_with_a_service_is_listed() -> None:
    with_services = {path.name for path in PROTOS.glob("*.proto") if _SERVICE.search(path.read_text(encoding="utf-8"))}
    listed = {module.DESCRIPTOR.name.rsplit("/", 1)[1] for module in contracts.SERVICE_MODULES}
    assert with_services, "no proto files found: the path is wrong"
    assert listed == with_services


def test_names_resolve() -> None:
    assert contracts.full_name("InboxService") == "clarion.v1.InboxService"
    assert "/clarion.v1.InboxService/WatchInbox" in contracts.methods()
