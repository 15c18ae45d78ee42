"""The one place where contents wait in memory between the steps of a file.

The claim reads a file while hashing it; the check needs those bytes, and once the
file is numbered its upload needs them again with its FS. Each step hands the bytes
on through this store instead of reading the spool again. It is bounded in bytes:
what does not fit is simply not kept, and the next step reads it from the spool.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

#: Bytes kept for every channel together (contents, FS included).
STORE_LIMIT_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Content:
    """What is already in memory for one submission: its bytes and its FS."""

    data: bytes | None = None
    fs: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data or b"") + len(self.fs or b"")


@dataclass
class ContentStore:
    """Contents by submission id, shared by the watcher and every channel worker."""

    limit: int = STORE_LIMIT_BYTES
    _items: dict[int, Content] = field(default_factory=dict)
    _size: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, sub_id: int, data: bytes | None, fs: bytes | None = None) -> None:
        """Keep a content if it fits; a content kept earlier for the same id is replaced."""
        content = Content(data, fs)
        if data is None and fs is None:
            return
        with self._lock:
            old = self._items.pop(sub_id, None)
            if old is not None:
                self._size -= old.size
            if self._size + content.size <= self.limit:
                self._items[sub_id] = content
                self._size += content.size

    def take(self, sub_id: int) -> Content:
        """The content kept for `sub_id` (an empty one if none), forgotten here."""
        with self._lock:
            content = self._items.pop(sub_id, None)
            if content is None:
                return Content()
            self._size -= content.size
            return content

    @property
    def size(self) -> int:
        return self._size
