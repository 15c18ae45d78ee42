"""A compressed reply (``CO.*``) unpacked beside itself, without trusting the archive.

The platform compresses big replies into a ZIP holding one file. flad always delivers
the ``CO`` file as received; when it is such a ZIP, the one entry is also written beside
it so that payroll software need not unzip. The server may be hostile (DESIGN.md), so
the entry's size is counted while it is written, never taken from the archive's
header, and both its size and its compression ratio are bounded: a ZIP bomb stops at
the limit with a reason, and the ``CO`` file is still delivered.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

#: at most this many bytes unpacked (four times flad's largest sent file)
MAX_UNPACKED_BYTES = 400 * 1024 * 1024
#: at most this many unpacked bytes per compressed byte (XML compresses ~10 to 50 times)
MAX_RATIO = 200
#: what the unpacked file's name adds to the CO file's name
SUFFIX = ".unpacked"
_CHUNK = 1024 * 1024


class UnpackRefused(Exception):
    """Why a CO file was not unpacked (one line); it is delivered as received anyway."""


def unpacked_name(co_name: str) -> str:
    return co_name + SUFFIX


def unpack_single(archive: Path, target: Path, *, max_bytes: int = MAX_UNPACKED_BYTES,
                  max_ratio: int = MAX_RATIO) -> int:
    """Write the one entry of the ZIP `archive` to `target` (fsynced); returns its size.

    Raises :class:`UnpackRefused` when the file is not a ZIP, holds other than one
    file, or its entry grows past `max_bytes` or `max_ratio` times the archive's size.
    Nothing is left at `target` then.
    """
    compressed = archive.stat().st_size
    limit = min(max_bytes, max(compressed, 1) * max_ratio)
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = [i for i in zf.infolist() if not i.is_dir()]
            if len(entries) != 1 or len(zf.infolist()) != 1:
                raise UnpackRefused(f"the archive holds {len(zf.infolist())} entries, "
                                    "expected exactly one file")
            written = 0
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                with zf.open(entries[0]) as source, os.fdopen(fd, "wb") as out:
                    while chunk := source.read(_CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise UnpackRefused(
                                f"the entry unpacks to more than {limit} bytes (limits: "
                                f"{max_bytes} bytes, {max_ratio} times the archive's "
                                f"{compressed} bytes): not unpacked")
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            except BaseException:
                target.unlink(missing_ok=True)
                raise
            return written
    except UnpackRefused:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            RuntimeError, ValueError, zlib.error) as exc:
        target.unlink(missing_ok=True)
        raise UnpackRefused(f"not a readable ZIP archive: {exc}") from None
