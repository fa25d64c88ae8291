"""Labeled image sets from untrusted folders and zip archives (ImageFolder style: one sub-folder per class).

Archive member names are never used as paths: only their last two components (class folder, file name) are
read. Count, total size and compression-ratio limits stop zip bombs before anything is decompressed, and
entries are read in chunks against the same limits, since the sizes an archive declares may lie.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from viz_server.errors import UserError

MAX_FILES = 40_000
"""The most files an image set holds: a dataset run's 20,000 pictures and their masks."""
MAX_TOTAL_BYTES = 512 * 2**20
MAX_RATIO = 20
"""Pictures barely compress (PNG and JPEG are compressed already): an archive that would inflate more than this
many times its own size is refused as a bomb."""
CHUNK = 1 << 20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError, NotImplementedError, KeyError)
"""What reading a damaged or hostile archive raises: bad CRCs and headers, encryption, unknown compression,
corrupt deflate streams."""

LabeledImage = tuple[str, bytes, "str | None"]  # (file name, bytes, class label or None)


def iter_archive(name: str, data: bytes) -> Iterator[LabeledImage]:
    """The pictures of a zip archive, one at a time, with their class folder as label. Refuses bombs and lying or
    damaged archives with one sentence; memory stays bounded by one entry plus the archive itself."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [entry for entry in archive.infolist() if not entry.is_dir()]
    except ZIP_ERRORS:
        raise UserError(f"{name} is not a readable zip archive; upload a .zip of class folders.") from None
    if len(entries) > MAX_FILES:
        raise UserError(f"{name} holds {len(entries)} files, more than the {MAX_FILES} allowed.")
    budget = min(MAX_TOTAL_BYTES, MAX_RATIO * max(len(data), 1))
    if sum(entry.file_size for entry in entries) > budget:
        raise UserError(f"{name} would unpack to more than {budget / 2**20:.0f} MiB; that looks like a zip bomb and was refused.")
    unpacked = 0
    for entry in entries:
        path = PurePosixPath(entry.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue  # never trust archive paths; skip anything that is not a picture
        chunks: list[bytes] = []
        size = 0
        try:
            with archive.open(entry) as handle:
                while chunk := handle.read(min(CHUNK, entry.file_size + 1 - size)):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > entry.file_size:
                        raise UserError(f"{name} lies about the size of {path.name}; the archive was refused.")
        except ZIP_ERRORS:
            raise UserError(f"{name} is damaged at {path.name[:80]} (a bad checksum, an encrypted or unknown entry); the archive was refused.") from None
        unpacked += size
        if unpacked > budget:
            raise UserError(f"{name} unpacks to more than {budget / 2**20:.0f} MiB; the archive was refused.")
        yield path.name, b"".join(chunks), path.parts[-2] if len(path.parts) >= 2 else None


def read_archive(name: str, data: bytes) -> list[LabeledImage]:
    """Every picture of a zip archive (see ``iter_archive``)."""
    return list(iter_archive(name, data))


MASK_MARK = ".mask"
"""``NAME.mask.png`` beside ``NAME.png`` (same folder) is that picture's object mask: white on the object."""


def pair_masks(pictures: list[LabeledImage]) -> list[tuple[str, bytes, str | None, bytes | None]]:
    """(name, bytes, label, mask bytes or None) for every picture of a set, its mask (``MASK_MARK``) paired from the
    same folder; a mask with no picture of its name beside it is refused with one sentence."""
    masks = {}
    for name, data, label in pictures:
        stem = PurePosixPath(name).stem
        if stem.endswith(MASK_MARK):
            masks[(label, stem[: -len(MASK_MARK)])] = (name, data)
    paired = []
    for name, data, label in pictures:
        if PurePosixPath(name).stem.endswith(MASK_MARK):
            continue
        mask = masks.pop((label, PurePosixPath(name).stem), None)
        paired.append((name, data, label, mask[1] if mask else None))
    if masks:
        orphan = next(iter(masks.values()))[0]
        raise UserError(f"{orphan[:80]} is a mask with no picture of its name beside it; put NAME.mask.png next to NAME.png.")
    return paired


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
