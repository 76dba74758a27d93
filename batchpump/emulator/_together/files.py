"""Together files in the emulator: two upload flows, bytes in memory.

A file arrives whole (direct multipart upload, or a result file the emulator writes), or is
registered first and gets its bytes by the signed-URL ``PUT`` (``data`` is ``None`` until
then); ``preprocess`` marks it processed. Ids are UUID-shaped digests of the emulator's seeded
ids, as Together's are UUIDs. ``TogetherFileStore`` reads as a mapping of the files by id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Final, final

from .._routing import ApiError
from .._state import Emulator
from .wire import FileResponse

__all__ = ["TogetherFile", "TogetherFileStore", "together_uuid"]

_PURPOSES: Final = frozenset(
    {
        "fine-tune",
        "eval",
        "eval-sample",
        "eval-output",
        "eval-summary",
        "batch-generated",
        "batch-api",
    }
)


def together_uuid(raw: str) -> str:
    """A UUID-shaped digest of ``raw`` (an emulator id)."""
    digest = hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


@final
class TogetherFile:
    """One stored file; ``data`` is ``None`` while a signed-URL upload awaits its PUT."""

    __slots__ = ("created_at", "data", "file_type", "filename", "id", "processed", "purpose")

    def __init__(self, id: str, filename: str, purpose: str, file_type: str, now: float) -> None:
        self.id = id
        self.filename = filename
        self.purpose = purpose
        self.file_type = file_type
        self.created_at = now
        self.data: bytes | None = None
        self.processed = False

    def to_wire(self) -> FileResponse:
        data = self.data or b""
        return FileResponse(
            id=self.id,
            created_at=int(self.created_at),
            filename=self.filename,
            bytes=len(data),
            purpose=self.purpose,
            file_type=self.file_type,
            Processed=self.processed,
            LineCount=data.count(b"\n"),
        )


@final
class TogetherFileStore(Mapping[str, TogetherFile]):
    """The files of one Together emulator (``TogetherState.files``), by id."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._files: dict[str, TogetherFile] = {}

    def __getitem__(self, file_id: str) -> TogetherFile:
        return self._files[file_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def new_file(
        self, filename: str | None, purpose: str | None, file_type: str | None
    ) -> TogetherFile:
        """Register a file (its bytes arrive with it, or later by the signed-URL PUT)."""
        if not filename or not purpose:
            missing = "file_name" if not filename else "purpose"
            raise ApiError(400, f"Missing required field: {missing}", param=missing)
        if purpose not in _PURPOSES:
            raise ApiError(400, f"Invalid purpose: {purpose}", param="purpose")
        kind = file_type or "jsonl"
        if kind not in ("jsonl", "csv", "parquet"):
            raise ApiError(400, f"Invalid file_type: {kind}", param="file_type")
        record = TogetherFile(
            f"file-{together_uuid(self.emulator.new_id('file'))}",
            filename,
            purpose,
            kind,
            self.emulator.now(),
        )
        self._files[record.id] = record
        return record

    def add_file(self, filename: str, purpose: str, data: bytes) -> TogetherFile:
        """Store a complete, processed file."""
        record = self.new_file(filename, purpose, "jsonl")
        record.data, record.processed = data, True
        return record

    def get_file(self, file_id: str, *, uploaded: bool = True) -> TogetherFile:
        """The file (404 if unknown, or still waiting for its bytes when ``uploaded``)."""
        record = self._files.get(file_id)
        if record is None or (uploaded and record.data is None):
            raise ApiError(404, f"File {file_id} not found", type="not_found", param="id")
        return record

    def delete_file(self, file_id: str) -> None:
        """``DELETE /files/{id}``: forget the file (404 if unknown)."""
        self.get_file(file_id, uploaded=False)
        del self._files[file_id]

    def preprocess(self, file_id: str) -> TogetherFile:
        """``POST /files/{id}/preprocess``: the uploaded bytes are checked and marked processed."""
        record = self.get_file(file_id)
        record.processed = True
        return record
