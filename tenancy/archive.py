"""The tenant archive container: a ZIP file of JSON metadata, Parquet data and a manifest.

Entries are written with a fixed timestamp and in a fixed order, so two exports of the
same data differ only in the manifest's ``exported_at``. Parquet entries are stored
uncompressed in the ZIP (Parquet compresses its own pages); JSON entries are deflated.
``manifest.json`` comes last and lists every other entry with its size, SHA-256 and row
count; an importer checks all of them before writing anything.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FORMAT = "kommune-iot-tenant-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# ZIP's earliest representable time: no entry carries the moment it was written.
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """The file is not a readable tenant archive of this format; the message says why."""


@dataclass
class EntryInfo:
    bytes: int
    sha256: str
    rows: int


class HashingWriter:
    """A write-only file object over a ZIP entry that counts and hashes what passes."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._target.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._target.flush()

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class ArchiveWriter:
    """Writes entries in order; `close` adds the manifest."""

    def __init__(self, path: Path) -> None:
        self._zip = zipfile.ZipFile(path, "w", allowZip64=True)
        self.entries: dict[str, EntryInfo] = {}
        self._open: IO[bytes] | None = None

    def open_entry(self, name: str, stored: bool) -> tuple[IO[bytes], HashingWriter]:
        info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
        info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        raw = self._zip.open(info, "w", force_zip64=True)
        self._open = raw
        return raw, HashingWriter(raw)

    def finish_entry(self, name: str, raw: IO[bytes], writer: HashingWriter, rows: int) -> None:
        raw.close()
        self._open = None
        self.entries[name] = EntryInfo(writer.size, writer.sha256, rows)

    def write_json(self, name: str, value: Any, rows: int) -> None:
        raw, writer = self.open_entry(name, stored=False)
        writer.write(canonical_json(value))
        self.finish_entry(name, raw, writer, rows)

    def close(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write the manifest (`manifest` with the entries' list) and close; returns it."""
        manifest = {
            **manifest,
            "entries": {
                name: {"bytes": e.bytes, "sha256": e.sha256, "rows": e.rows}
                for name, e in self.entries.items()
            },
        }
        info = zipfile.ZipInfo(MANIFEST, date_time=_FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, canonical_json(manifest))
        self._zip.close()
        return manifest

    def abort(self) -> None:
        """Close after a failure (the caller deletes the file)."""
        if self._open is not None:
            self._open.close()
        self._zip.close()


def canonical_json(value: Any) -> bytes:
    """Sorted keys, fixed separators, UTF-8, trailing newline: stable bytes."""
    return (
        json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1, separators=(",", ": "))
        + "\n"
    ).encode()


class ArchiveReader:
    """Opens an archive and checks its manifest and every entry's size and SHA-256."""

    def __init__(self, path: Path) -> None:
        try:
            self._zip = zipfile.ZipFile(path, "r")
        except (OSError, zipfile.BadZipFile) as exc:
            raise ArchiveError(f"{path}: not a readable ZIP archive ({exc})") from None
        try:
            self.manifest = json.loads(self._zip.read(MANIFEST))
        except KeyError:
            raise ArchiveError(f"{path}: no {MANIFEST}; not a tenant archive") from None
        except ValueError as exc:
            raise ArchiveError(f"{path}: {MANIFEST} is not JSON ({exc})") from None
        if self.manifest.get("format") != FORMAT:
            raise ArchiveError(f"{path}: not a {FORMAT} (format {self.manifest.get('format')!r})")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise ArchiveError(
                f"{path}: archive format version {self.manifest.get('format_version')!r}; "
                f"this version of kommune-iot reads version {FORMAT_VERSION}"
            )

    def verify(self) -> None:
        """Raise ArchiveError unless every listed entry is present, whole and unaltered,
        and nothing unlisted is in the archive."""
        listed = self.manifest.get("entries") or {}
        present = {i.filename for i in self._zip.infolist()} - {MANIFEST}
        if present - set(listed):
            raise ArchiveError(f"entries not in the manifest: {sorted(present - set(listed))}")
        for name, expected in listed.items():
            if name not in present:
                raise ArchiveError(f"entry {name} listed in the manifest is missing")
            digest = hashlib.sha256()
            size = 0
            with self._zip.open(name) as entry:
                while chunk := entry.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            if size != expected["bytes"] or digest.hexdigest() != expected["sha256"]:
                raise ArchiveError(f"entry {name} does not match its checksum: altered or cut")

    def read_json(self, name: str) -> Any:
        return json.loads(self._zip.read(name))

    def extract(self, name: str, directory: Path) -> Path:
        """Copy an entry to `directory` (Parquet readers need a seekable file)."""
        target = directory / Path(name).name
        with self._zip.open(name) as source, target.open("wb") as out:
            while chunk := source.read(_CHUNK):
                out.write(chunk)
        return target

    def has(self, name: str) -> bool:
        return name in (self.manifest.get("entries") or {})

    def close(self) -> None:
        self._zip.close()
