"""flad against its sandbox, the whole reply loop as a new user runs it: the service sends,
the sandbox answers in the official layouts, flad ties every answer to its submission."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flad import journal
from flad.cli import main
from flad.config import Config, load
from flad.journal import Journal
from flad.sandbox import start_sandbox
from tests import configs
from tests.certs import write_test_signer
from tests.harness import STANDIN_XSD, Running, wait_for
from tests.sshd import generate_key

DIMONA = b"""<?xml version="1.0" encoding="UTF-8"?>
<?flad-sandbox fileref="no" provisional="yes"?>
<Dimona><Form><Identification>DIMONA</Identification>
  <FormCreationDate>2026-11-27</FormCreationDate><FormCreationHour>09:00:00.001</FormCreationHour>
  <AttestationStatus>0</AttestationStatus><TypeForm>SU</TypeForm>
  <Reference><ReferenceType>1</ReferenceType><ReferenceOrigin>1</ReferenceOrigin>
  <ReferenceNbr>OWN-1</ReferenceNbr></Reference>
  <EmployerId>0123456749</EmployerId></Form></Dimona>
"""
SAMPLE = (Path(__file__).parent.parent / "flad" / "data" / "sample-fla.xml").read_bytes()
WITH_ANOMALY = SAMPLE.replace(b"<Hours>7.5</Hours>",
                              b"<Hours>7.5</Hours><Anomaly>B:FLA-00012:Hours</Anomaly>", 1)


class _Install:
    """What tests.harness.Running needs of an installation."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path

    @property
    def config(self) -> Config:
        return load(self.config_path)


def _drop(outbox: Path, app: str, name: str, data: bytes) -> None:
    folder = outbox / "test" / app
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f".{name}.tmp").write_bytes(data)
    os.rename(folder / f".{name}.tmp", folder / name)


def test_flad_ties_every_answer_of_its_sandbox(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "client_key"
    public_line = generate_key(key, "ed25519")
    signer = write_test_signer(tmp_path / "signer")
    with start_sandbox(tmp_path / "platform", authorized_keys=[public_line],
                       client_cert=signer.cert_path, notify_delay=0.3, poll_interval=0.05,
                       settle_seconds=0.1) as sandbox:
        channel = configs.channel(
            tmp_path, "acme", port=sandbox.port, username="flad", key=key,
            reply_trust=sandbox.cert_path, poll_seconds=0.3,
            signing={"certificate": signer.cert_path, "private_key": signer.key_path},
            application=[{"name": "fla", "code": "FLAX", "xsd": STANDIN_XSD,
                          "root_element": "FLADeclaration"},
                         {"name": "dimona", "code": "DIMN"}])
        channel["sftp"]["known_hosts"] = sandbox.known_hosts_path
        config_path = configs.write(tmp_path, [channel], settle_seconds=0.2,
                                    rescan_seconds=1, log_format="json")
        outbox = Path(channel["outbox"])
        _drop(outbox, "dimona", "dimona.xml", DIMONA)
        _drop(outbox, "fla", "anomaly.xml", WITH_ANOMALY)
        db = Journal(tmp_path / "state" / "journal.sqlite3")

        def notified() -> bool:
            subs = db.submissions()
            return len(subs) == 2 and all(s.state == journal.NOTIFIED for s in subs)

        try:
            with Running(_Install(config_path)):
                wait_for(notified, timeout=30, what="both submissions notified")
            subs = {s.drop_name: s for s in db.submissions()}
        finally:
            db.close()
    dimona = subs["dimona.xml"]
    assert (dimona.noti_result, dimona.noti_provisional, dimona.noti_type_form) == (1, 0, "FA")
    assert [f["tied_by"] for f in json.loads(dimona.noti_forms or "[]")] == ["form"]
    anomaly = subs["anomaly.xml"]
    assert (anomaly.noti_result, anomaly.anomalies_blocking) == (0, 1)
    capsys.readouterr()
    assert main(["status", "-c", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert "!! NOTIFIED" in out and "worker INSS 85073003328" in out
    assert main(["status", "-c", str(config_path), "--unmatched"]) == 0
    assert "no reply without a submission" in capsys.readouterr().out
    # the provisional answer came first and was recorded, then replaced by the final one
    db = Journal(tmp_path / "state" / "journal.sqlite3")
    try:
        details = [d for _, _, d in db.events(dimona.id) if d and "provisional" in d]
    finally:
        db.close()
    assert details and details[0].startswith("provisional: result 3")
