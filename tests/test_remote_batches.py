"""Pipelined downloads and removals (the reply side's batches) against a real sshd and
against the sandbox's paramiko server (which announces no limits)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from flad.remote import RemoteNotFound, SftpChannel, TransportError, wire
from flad.remote.protocol import Downloaded
from tests.sshd import SshServer
from tests.test_remote_sftp import settings_for

SIZES = [0, 1, wire.READ_DATA - 1, wire.READ_DATA, wire.READ_DATA + 1, 3 * 1024 * 1024 + 17]


def test_many_files_arrive_whole_with_their_sizes(sshd: SshServer, tmp_path: Path) -> None:
    # more than two windows of open files; the first 70 of every size
    contents = {f"OUTTEST/f{i:03d}": os.urandom((SIZES[i % len(SIZES)] if i < 70 else 0) + i)
                for i in range(2 * wire.MAX_OPEN_FILES + 5)}
    for remote, data in contents.items():
        (sshd.root / remote).write_bytes(data)
    local = tmp_path / "got"
    local.mkdir()
    items = [(remote, len(data), local / remote.split("/")[1])
             for remote, data in contents.items()]
    with SftpChannel(settings_for(sshd, tmp_path)) as channel:
        results = channel.get_files(items)
        assert results == [Downloaded(len(data), hashlib.sha256(data).hexdigest())
                           for data in contents.values()]
        assert channel.connections_opened == 1
    for remote, data in contents.items():
        assert (local / remote.split("/")[1]).read_bytes() == data


def test_folders_listed_together_with_sizes(sshd: SshServer, tmp_path: Path) -> None:
    """One listing per folder gives names and sizes; more names than one round of
    READDIRs holds; folders are left out; a missing folder fails alone."""
    from flad.remote.sftp import READDIRS_AHEAD

    count = READDIRS_AHEAD * 100 + 150  # OpenSSH: up to 100 names per READDIR answer
    for i in range(count):
        (sshd.root / "OUT" / f"GO.{i:05d}").write_bytes(b"x" * (i % 7))
    (sshd.root / "OUT" / "a-folder").mkdir()
    with SftpChannel(settings_for(sshd, tmp_path)) as channel:
        out, empty, missing = channel.listdirs(["OUT", "OUTTEST", "NOPE"])
        assert out == [(f"GO.{i:05d}", i % 7) for i in range(count)]
        assert empty == []
        assert isinstance(missing, RemoteNotFound) and "NOPE" in str(missing)
        assert channel.listdir("OUTTEST") == []  # the session is still usable
        with pytest.raises(RemoteNotFound):
            channel.listdir("NOPE")


def test_one_bad_file_fails_alone(sshd: SshServer, tmp_path: Path) -> None:
    (sshd.root / "OUTTEST" / "good").write_bytes(b"x" * 100_000)
    (sshd.root / "OUTTEST" / "grew").write_bytes(b"y" * 5000)
    items = [("OUTTEST/good", 100_000, tmp_path / "good"),
             ("OUTTEST/gone", 10, tmp_path / "gone"),
             ("OUTTEST/grew", 4000, tmp_path / "grew")]  # listed before it grew
    with SftpChannel(settings_for(sshd, tmp_path)) as channel:
        good, gone, grew = channel.get_files(items)
        assert good == Downloaded(100_000, hashlib.sha256(b"x" * 100_000).hexdigest())
        assert isinstance(gone, RemoteNotFound) and "OUTTEST/gone" in str(gone)
        assert isinstance(grew, TransportError) and "the listing said 4000" in str(grew)
        assert channel.is_connected  # per-file errors leave the session usable
        assert channel.get_files([items[0]]) == [good]


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
        assert [r.size for r in results if isinstance(r, Downloaded)] == [len(d) for d in datas]
        assert all((tmp_path / f"r{i}").read_bytes() == d for i, d in enumerate(datas))


def test_pieces_hashed_in_order_whatever_order_they_come() -> None:
    """A short answer makes the rest of a piece come after later pieces: the hash is
    still of the file's bytes in order."""
    data = os.urandom(100_000)
    pieces = [(0, data[:10]), (32_768, data[32_768:65_536]), (10, data[10:32_768]),
              (65_536, data[65_536:])]
    hashed = wire.InOrderHash()
    for offset, piece in pieces:
        hashed.add(offset, piece)
    assert hashed.hexdigest() == hashlib.sha256(data).hexdigest()
    incomplete = wire.InOrderHash()
    incomplete.add(10, data[10:20])  # the first bytes never came
    assert incomplete.hexdigest() == hashlib.sha256(b"").hexdigest()
