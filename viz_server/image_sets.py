"""Labeled image sets from untrusted folders and zip archives (ImageFolder style: one sub-folder per class).

Archive member names are never used as paths: only their last two components (class folder, file name) are
read. Count, total size and compression-ratio limits stop zip bombs before anything is decompressed.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

from viz_server.errors import UserError

MAX_FILES = 2000
MAX_TOTAL_BYTES = 512 * 2**20
MAX_RATIO = 200
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")

LabeledImage = tuple[str, bytes, "str | None"]  # (file name, bytes, class label or None)


def read_archive(name: str, data: bytes) -> list[LabeledImage]:
    """Pictures of a zip archive with their class folder as label; refuses bombs and lying archives."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [entry for entry in archive.infolist() if not entry.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UserError(f"{name} is not a readable zip archive; upload a .zip of class folders.") from None
    if len(entries) > MAX_FILES:
        raise UserError(f"{name} holds {len(entries)} files, more than the {MAX_FILES} allowed.")
    total = sum(entry.file_size for entry in entries)
    if total > MAX_TOTAL_BYTES or total > MAX_RATIO * max(len(data), 1):
        raise UserError(f"{name} would unpack to {total / 2**20:.0f} MiB; that looks like a zip bomb and was refused.")
    found: list[LabeledImage] = []
    for entry in entries:
        path = PurePosixPath(entry.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue  # never trust archive paths; skip anything that is not a picture
        with archive.open(entry) as handle:
            content = handle.read(entry.file_size + 1)
        if len(content) > entry.file_size:
            raise UserError(f"{name} lies about the size of {path.name}; the archive was refused.")
        found.append((path.name, content, path.parts[-2] if len(path.parts) >= 2 else None))
    return found


def read_image_set(source: str | Path) -> list[LabeledImage]:
    """A folder (sub-folders = classes, or loose pictures = unlabeled) or a .zip archive of one."""
    path = Path(source)
    if path.is_file():
        if path.stat().st_size > MAX_TOTAL_BYTES:
            raise UserError(f"{path.name} is larger than {MAX_TOTAL_BYTES / 2**20:.0f} MiB.")
        return read_archive(path.name, path.read_bytes())
    if not path.is_dir():
        raise UserError(f"no image set at {source}; give a folder with one sub-folder per class, or a .zip of one.")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.is_symlink())
    if len(files) > MAX_FILES:
        raise UserError(f"{source} holds {len(files)} pictures, more than the {MAX_FILES} allowed.")
    found = []
    for file in files:
        relative = file.relative_to(path)
        found.append((file.name, file.read_bytes(), relative.parts[0] if len(relative.parts) >= 2 else None))
    if not found:
        raise UserError(f"{source} holds no pictures (PNG, JPEG, ...).")
    return found
