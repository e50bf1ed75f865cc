"""``manifest.json``: what an index directory holds, with a checksum of every file and of itself.

The manifest's own checksum (``manifest_sha256``, over the rest of its content) matters as much as the
files': it says how text is analyzed and how many documents there are, so a damaged value there (a
stop word, the stemmer, a count) would otherwise change results without any error.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from rankstack.errors import IndexCorruptError, IndexFormatError, IndexNotFoundError

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "rankstack-index"
FORMAT_VERSION = 2  # 2: the manifest carries a checksum of itself
SEAL_KEY = "manifest_sha256"


def _content_digest(manifest: dict[str, Any]) -> str:
    content = {k: v for k, v in manifest.items() if k != SEAL_KEY}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def seal_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its checksum (re)computed: call after any change to it."""
    return {**{k: v for k, v in manifest.items() if k != SEAL_KEY}, SEAL_KEY: _content_digest(manifest)}


def _write(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(seal_manifest(manifest), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    fsync_path(path)


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's entries: a new or renamed file survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, content: dict[str, Any]) -> dict[str, Any]:
    """Checksum and fsync every file of ``directory``, then write the manifest last.

    The manifest is the commit point of a build: a directory without one never loads.
    """
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative == MANIFEST_NAME:
            continue
        fsync_path(path)
        files[relative] = {"sha256": file_checksum(path), "bytes": path.stat().st_size}
    manifest = seal_manifest({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **content, "files": files})
    _write(directory / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(directory: Path, verify_checksums: bool = True) -> dict[str, Any]:
    """Load and check a manifest; every failure says what is wrong and what to do."""
    if not directory.exists():
        raise IndexNotFoundError(
            f"no index at {directory}; build one with: rankstack index CORPUS -o {directory}")
    if not directory.is_dir():
        raise IndexNotFoundError(f"{directory} is a file, not an index directory")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise IndexCorruptError(
            f"{directory} is not a rankstack index (no {MANIFEST_NAME}); an interrupted build leaves none. "
            f"Rebuild it with: rankstack index CORPUS -o {directory} --overwrite")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexCorruptError(f"{path} is not valid JSON ({error}); rebuild the index") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexCorruptError(f"{path} is not a rankstack index manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{directory} was written in index format {version}, but this rankstack reads format "
            f"{FORMAT_VERSION}; upgrade with: pip install -U rankstack")
    if version < FORMAT_VERSION:
        raise IndexFormatError(
            f"{directory} was written by an older rankstack (index format {version}); rebuild it with: "
            f"rankstack index CORPUS -o {directory} --overwrite")
    if manifest.get(SEAL_KEY) != _content_digest(manifest):
        raise IndexCorruptError(
            f"{path} does not match its own checksum (it was edited or damaged); rebuild the index with: "
            f"rankstack index CORPUS -o {directory} --overwrite")
    _check_files(directory, manifest, verify_checksums)
    return manifest


def _check_files(directory: Path, manifest: dict[str, Any], verify_checksums: bool) -> None:
    for relative, expected in manifest.get("files", {}).items():
        file = directory / relative
        if not file.is_file():
            raise IndexCorruptError(f"{file} is listed in the manifest but missing; rebuild the index")
        if file.stat().st_size != expected["bytes"] or (
            verify_checksums and file_checksum(file) != expected["sha256"]
        ):
            raise IndexCorruptError(
                f"{file} does not match the checksum in {MANIFEST_NAME} (the file was changed or damaged); "
                f"rebuild the index with: rankstack index CORPUS -o {directory} --overwrite")


def update_manifest(directory: Path, prefix: str, section: tuple[str, str], section_value: dict[str, Any]) -> None:
    """Replace the manifest's entries for files under ``prefix`` and one named section, atomically.

    Files elsewhere keep their recorded checksums, so adding vectors does not re-hash the corpus.
    """
    path = directory / MANIFEST_NAME
    manifest = json.loads(path.read_text(encoding="utf-8"))
    files = {name: entry for name, entry in manifest["files"].items() if not name.startswith(prefix)}
    for file in sorted(p for p in (directory / prefix).rglob("*") if p.is_file()):
        fsync_path(file)
        files[file.relative_to(directory).as_posix()] = {"sha256": file_checksum(file), "bytes": file.stat().st_size}
    manifest["files"] = files
    key, name = section
    manifest.setdefault(key, {})[name] = section_value
    temporary = directory / (MANIFEST_NAME + ".tmp")
    _write(temporary, manifest)
    os.replace(temporary, path)
