"""OpenAI files and uploads in the emulator: bytes in memory, ids from the seeded factory."""

from __future__ import annotations

from typing import Final, final

from .._routing import ApiError
from .._state import Emulator
from .wire import (
    CompleteUploadBody,
    CreateUploadBody,
    FileObject,
    ListPage,
    UploadObject,
    UploadPartObject,
)

__all__ = ["FILE_PURPOSES", "FileRecord", "FileStore", "UploadRecord"]

#: Purposes ``POST /v1/files`` accepts.
FILE_PURPOSES: Final[frozenset[str]] = frozenset(
    {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}
)
_UPLOAD_PURPOSES: Final[frozenset[str]] = frozenset({"assistants", "batch", "fine-tune", "vision"})
_THIRTY_DAYS: Final = 2_592_000.0
_UPLOAD_TTL: Final = 3_600.0
_MAX_UPLOAD_BYTES: Final = 8 * 1024**3


@final
class FileRecord:
    """One stored file."""

    __slots__ = ("created_at", "data", "expires_at", "filename", "id", "purpose")

    def __init__(
        self, id: str, filename: str, purpose: str, created_at: float, data: bytes
    ) -> None:
        self.id = id
        self.filename = filename
        self.purpose = purpose
        self.created_at = created_at
        self.data = data
        persistent = purpose not in ("batch", "batch_output")
        self.expires_at: float | None = None if persistent else created_at + _THIRTY_DAYS

    def to_wire(self) -> FileObject:
        """The ``OpenAIFile`` object."""
        return FileObject(
            id=self.id,
            bytes=len(self.data),
            created_at=int(self.created_at),
            expires_at=None if self.expires_at is None else int(self.expires_at),
            filename=self.filename,
            purpose=self.purpose,
        )


@final
class UploadRecord:
    """One Upload (``POST /v1/uploads``) and its parts."""

    __slots__ = ("bytes", "created_at", "file", "filename", "id", "parts", "purpose", "status")

    def __init__(self, id: str, filename: str, purpose: str, size: int, created_at: float) -> None:
        self.id = id
        self.filename = filename
        self.purpose = purpose
        self.bytes = size
        self.created_at = created_at
        self.status = "pending"
        self.parts: dict[str, bytes] = {}
        self.file: FileRecord | None = None

    def to_wire(self, now: float) -> UploadObject:
        """The ``Upload`` object at ``now`` (``expired`` one hour after creation if pending)."""
        expires_at = self.created_at + _UPLOAD_TTL
        status = "expired" if self.status == "pending" and now >= expires_at else self.status
        return UploadObject(
            id=self.id,
            bytes=self.bytes,
            created_at=int(self.created_at),
            expires_at=int(expires_at),
            filename=self.filename,
            purpose=self.purpose,
            status=status,
            file=None if self.file is None else self.file.to_wire(),
        )


@final
class FileStore:
    """The files and uploads of one OpenAI emulator (``OpenAIState.files``)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.records: dict[str, FileRecord] = {}
        self._file_order: list[str] = []
        self.uploads: dict[str, UploadRecord] = {}

    # -- files ------------------------------------------------------------------------------

    def add_file(self, filename: str, purpose: str, data: bytes) -> FileRecord:
        """Store ``data`` as a new file."""
        record = FileRecord(
            self.emulator.new_id("file-"), filename, purpose, self.emulator.now(), data
        )
        self.records[record.id] = record
        self._file_order.append(record.id)
        return record

    def upload_file(self, filename: str | None, purpose: str | None, data: bytes) -> FileRecord:
        """``POST /v1/files``: check the form fields, then store."""
        if purpose is None:
            raise ApiError(
                400,
                "Missing required parameter: 'purpose'.",
                param="purpose",
                code="missing_required_parameter",
            )
        if filename is None:
            raise ApiError(
                400,
                "Missing required parameter: 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        if purpose not in FILE_PURPOSES:
            raise ApiError(
                400,
                f"Invalid value for 'purpose': '{purpose}'.",
                param="purpose",
                code="invalid_value",
            )
        if purpose == "batch" and not filename.endswith(".jsonl"):
            raise ApiError(
                400,
                "Invalid file format for Batch API. Must be .jsonl",
                param="file",
                code="invalid_file_format",
            )
        return self.add_file(filename, purpose, data)

    def get_file(self, file_id: str, *, param: str = "file_id") -> FileRecord:
        """The file, or a 404 ``ApiError``."""
        record = self.records.get(file_id)
        if record is None:
            raise ApiError(404, f"No such File object: {file_id}", param=param, code="not_found")
        return record

    def delete_file(self, file_id: str) -> None:
        """Forget a file (its id stays in the creation order and is skipped when listing)."""
        self.get_file(file_id)
        del self.records[file_id]

    def list_files(
        self, *, purpose: str | None, limit: int, order: str, after: str | None
    ) -> ListPage:
        """``GET /v1/files``: by creation time, ``desc`` by default."""
        ids = reversed(self._file_order) if order == "desc" else iter(self._file_order)
        if after is not None:
            for file_id in ids:
                if file_id == after:
                    break
        data: list[FileObject] = []
        has_more = False
        for file_id in ids:
            record = self.records.get(file_id)
            if record is None or (purpose is not None and record.purpose != purpose):
                continue
            if len(data) == limit:
                has_more = True
                break
            data.append(record.to_wire())
        return ListPage(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    # -- uploads ----------------------------------------------------------------------------

    def create_upload(self, body: CreateUploadBody) -> UploadRecord:
        """``POST /v1/uploads``."""
        for name in ("bytes", "filename", "mime_type", "purpose"):
            if getattr(body, name) is None:
                raise ApiError(
                    400,
                    f"Missing required parameter: '{name}'.",
                    param=name,
                    code="missing_required_parameter",
                )
        assert body.filename is not None
        assert body.purpose is not None
        assert body.bytes is not None
        if body.purpose not in _UPLOAD_PURPOSES:
            raise ApiError(
                400,
                f"Invalid value for 'purpose': '{body.purpose}'.",
                param="purpose",
                code="invalid_value",
            )
        if not 0 <= body.bytes <= _MAX_UPLOAD_BYTES:
            raise ApiError(
                400,
                "Invalid 'bytes': an Upload holds at most 8 GB.",
                param="bytes",
                code="invalid_value",
            )
        upload = UploadRecord(
            self.emulator.new_id("upload_"),
            body.filename,
            body.purpose,
            body.bytes,
            self.emulator.now(),
        )
        self.uploads[upload.id] = upload
        return upload

    def get_upload(self, upload_id: str, *, pending: bool = False) -> UploadRecord:
        """The upload (404 if unknown; 400 if ``pending`` is required and it is not)."""
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise ApiError(
                404, f"No such Upload object: {upload_id}", param="upload_id", code="not_found"
            )
        status = upload.to_wire(self.emulator.now()).status
        if pending and status != "pending":
            raise ApiError(
                400,
                f"Upload {upload_id} is {status}; it accepts no more changes.",
                param="upload_id",
                code="invalid_state",
            )
        return upload

    def add_part(self, upload_id: str, data: bytes) -> UploadPartObject:
        """``POST /v1/uploads/{id}/parts``."""
        upload = self.get_upload(upload_id, pending=True)
        part_id = self.emulator.new_id("part_")
        upload.parts[part_id] = data
        return UploadPartObject(
            id=part_id, created_at=int(self.emulator.now()), upload_id=upload_id
        )

    def complete_upload(self, upload_id: str, body: CompleteUploadBody) -> UploadRecord:
        """``POST /v1/uploads/{id}/complete``: join parts in ``part_ids`` order into a file."""
        upload = self.get_upload(upload_id, pending=True)
        if body.part_ids is None:
            raise ApiError(
                400,
                "Missing required parameter: 'part_ids'.",
                param="part_ids",
                code="missing_required_parameter",
            )
        unknown = [p for p in body.part_ids if p not in upload.parts]
        if unknown:
            raise ApiError(
                400, f"Unknown part id: '{unknown[0]}'.", param="part_ids", code="invalid_value"
            )
        data = b"".join(upload.parts[p] for p in body.part_ids)
        if len(data) != upload.bytes:
            raise ApiError(
                400,
                f"The parts add up to {len(data)} bytes, but the Upload was created with"
                f" 'bytes' = {upload.bytes}.",
                param="part_ids",
                code="invalid_value",
            )
        upload.file = self.add_file(upload.filename, upload.purpose, data)
        upload.status = "completed"
        upload.parts.clear()
        return upload

    def cancel_upload(self, upload_id: str) -> UploadRecord:
        """``POST /v1/uploads/{id}/cancel``."""
        upload = self.get_upload(upload_id, pending=True)
        upload.status = "cancelled"
        upload.parts.clear()
        return upload
