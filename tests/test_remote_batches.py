"""Pipelined downloads and removals (the reply side's batches) against a real sshd and
against the sandbox's paramiko server (which announces no limits)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flad.remote import RemoteNotFound, SftpChannel, TransportError, wire
from tests.sshd import SshServer
from tests.test_remote_sftp import settings_for

SIZES = [0, 1, wire.READ_DATA - 1, wire.READ_DATA, wire.READ_DATA + 1, 3 * 1024 * 1024 + 17]


def test_many_files_arrive_whole_with_their_sizes(sshd: SshServer, tmp_path: Path) -> None:
    contents = {f"OUTTEST/f{i:03d}": os.urandom(SIZES[i % len(SIZES)] + i)
                for i in range(70)}  # more than one window of open files
    for remote, data in contents.items():
        (sshd.root / remote).write_bytes(data)
    local = tmp_path / "got"
    local.mkdir()
    items = [(remote, len(data), local / remote.split("/")[1])
             for remote, data in contents.items()]
    with SftpChannel(settings_for(sshd, tmp_path)) as channel:
        results = channel.get_files(items)
        assert results == [len(data) for data in contents.values()]
        assert channel.connections_opened == 1
    for remote, data in contents.items():
        assert (local / remote.split("/")[1]).read_bytes() == data


def test_one_bad_file_fails_alone(sshd: SshServer, tmp_path: Path) -> None:
    (sshd.root / "OUTTEST" / "good").write_bytes(b"x" * 100_000)
    (sshd.root / "OUTTEST" / "grew").write_bytes(b"y" * 5000)
    items = [("OUTTEST/good", 100_000, tmp_path / "good"),
             ("OUTTEST/gone", 10, tmp_path / "gone"),
             ("OUTTEST/grew", 4000, tmp_path / "grew")]  # listed before it grew
    with SftpChannel(settings_for(sshd, tmp_path)) as channel:
        good, gone, grew = channel.get_files(items)
        assert good == 100_000
        assert isinstance(gone, RemoteNotFound) and "OUTTEST/gone" in str(gone)
        assert isinstance(grew, TransportError) and "the listing said 4000" in str(grew)
        assert channel.is_connected  # per-file errors leave the session usable
        assert channel.get_files([items[0]]) == [100_000]


def test_removals_together_absent_counts_as_removed(sshd: SshServer, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (sshd.root / "OUTTEST" / name).write_bytes(b"reply")
    (sshd.root / "OUTTEST" / "dir").mkdir()
    with SftpChannel(settings_for(sshd, tmp_path)) as channel:
        results = channel.remove_files(["OUTTEST/a", "OUTTEST/missing", "OUTTEST/b",
                                        "OUTTEST/dir", "OUTTEST/c"])
    assert results[:3] == [None, None, None] and results[4] is None
    assert isinstance(results[3], TransportError)  # a folder is not removed as a file
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == ["dir"]


@pytest.mark.parametrize("count", [1, 40])
def test_downloads_from_the_sandbox_server(tmp_path: Path, count: int) -> None:
    from tests.sandboxed import sandboxed_install

    with sandboxed_install(tmp_path) as (inst, sandbox):
        datas = [os.urandom(70_000 + i) for i in range(count)]
        for i, data in enumerate(datas):
            (sandbox.root / "OUTTEST" / f"r{i}").write_bytes(data)
        from flad import config as config_mod

        channel = SftpChannel(config_mod.load(inst.config_path).channels[0].sftp)
        with channel:
            results = channel.get_files([(f"OUTTEST/r{i}", len(d), tmp_path / f"r{i}")
                                         for i, d in enumerate(datas)])
        assert results == [len(d) for d in datas]
        assert all((tmp_path / f"r{i}").read_bytes() == d for i, d in enumerate(datas))
