"""Content-addressed file storage: every upload and artifact is stored under its SHA-256, never a client name."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: str) -> Path:
        """The file of a blob; only a well-formed digest maps to a path, so no URL can reach outside."""
        if not SHA256.match(digest or ""):
            raise KeyError(digest)
        return self.folder / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():  # written again: it is in use now, so garbage collection's grace period starts again
            try:
                os.utime(target)
            except OSError:
                pass
        else:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = target.with_name(f"{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            temporary.replace(target)
        return digest

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def stored(self) -> list[tuple[str, float]]:
        """(digest, modification time) of every stored blob."""
        return [(path.name, path.stat().st_mtime) for path in self.folder.glob("??/*") if SHA256.match(path.name)]

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def exists(self, digest: str) -> bool:
        try:
            return self.path(digest).is_file()
        except KeyError:
            return False
