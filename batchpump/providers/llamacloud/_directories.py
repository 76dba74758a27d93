"""LlamaCloud source directories: one per shard attempt, found by name, filled by uploads.

A shard attempt's directory is named ``bp-<run>-<index>-<attempt>`` and is *ephemeral* (it
expires after ``DIRECTORY_TTL``). ``Directories.fill`` finds it by that name or creates it, then
uploads each item whose ``custom_id`` is not yet a file's ``unique_id`` there, so a resumed
``prepare`` only sends what is missing. A create whose answer was lost is looked up by name
before it is sent again: a second directory of that name is never made.
"""

from __future__ import annotations

import logging
import mimetypes
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, final

import anyio

from ..._clock import Clock
from ..._config import RetryPolicy
from ..._errors import ProviderError, ProviderUnavailableError, TransportError
from ..._fileio import run_io_sized
from ..._models import ShardRecord
from ..._retry import backoff
from ._api import LlamaCloudApi
from ._wire import (
    DIRECTORY_DECODER,
    DIRECTORY_PAGE_DECODER,
    ENCODER,
    FILE_DECODER,
    Item,
    WireDirectoryCreate,
    read_items,
)

__all__ = ["DIRECTORY_TTL", "Directories", "directory_name", "resolve"]

logger: Final = logging.getLogger("batchpump.llamacloud")

DIRECTORY_TTL: Final = 2 * 86_400.0
_DIRECTORIES: Final = "/api/v1/beta/directories"


def directory_name(shard: ShardRecord) -> str:
    """The source directory of one shard attempt: ``bp-<run>-<index>-<attempt>``."""
    return f"bp-{shard.run_id[:24]}-{shard.index}-{shard.attempt}"


def resolve(root: Path, file: str) -> Path:
    """An item's ``file``: ``~`` expanded, a relative path taken from ``root``."""
    path = Path(file).expanduser()
    return path if path.is_absolute() else root / path


@final
class Directories:
    """Finds, creates, fills and deletes shard-attempt directories, ``workers`` uploads at once."""

    def __init__(
        self, api: LlamaCloudApi, *, root: Path, workers: int, retry: RetryPolicy, clock: Clock
    ) -> None:
        self._api = api
        self._root = root
        self._workers = workers
        self._retry = retry
        self._clock = clock
        self._rng = random.Random()

    async def fill(self, shard: ShardRecord) -> str:
        """Make (or find) the attempt's directory, upload what is not there yet; return its id."""
        name = directory_name(shard)
        directory_id = await self.find(name)
        if directory_id is None:
            directory_id = await self._create(name)
        done = {f.unique_id async for f in self._api.files(directory_id)}
        items = await run_io_sized(shard.bytes, read_items, Path(shard.path))
        todo = [i for i in items if i.custom_id not in done]
        logger.info("directory %s: %d to upload, %d there", name, len(todo), len(done))
        queue = iter(todo)

        async def worker() -> None:
            for item in queue:  # shared iterator: each item goes to one worker
                await self._upload(directory_id, item)

        async with anyio.create_task_group() as tg:
            for _ in range(min(len(todo), self._workers)):
                tg.start_soon(worker)
        return directory_id

    async def find(self, name: str) -> str | None:
        """The id of the directory called ``name``, if there is one."""
        resp = await self._api.call("GET", _DIRECTORIES, "poll", params={"name": name})
        page = self._api.decode(DIRECTORY_PAGE_DECODER, resp.body, "directory list")
        return next((d.id for d in page.items if d.name == name), None)

    async def delete(self, directory_id: str) -> None:
        """Delete a directory, best effort (ephemeral ones expire anyway)."""
        try:
            await self._api.call("DELETE", f"{_DIRECTORIES}/{directory_id}", "create")
        except (ProviderError, TransportError) as exc:
            logger.info("could not delete directory %s: %s", directory_id, exc)

    async def _create(self, name: str) -> str:
        expires = datetime.fromtimestamp(self._clock.time() + DIRECTORY_TTL, tz=UTC)
        body = ENCODER.encode(WireDirectoryCreate(name=name, expires_at=expires.isoformat()))
        tries = 0
        while True:
            tries += 1
            try:
                resp = await self._api.call(
                    "POST", _DIRECTORIES, "create", json=body, idempotent=False
                )
            except (TransportError, ProviderUnavailableError):
                found = await self.find(name)  # did the ambiguous create land?
                if found is not None:
                    return found
                if tries >= self._retry.attempts:
                    raise
                # It did not: creating it again cannot make a second directory of that name.
                await self._clock.sleep(backoff(tries - 1, self._retry, self._rng))
                continue
            return self._api.decode(DIRECTORY_DECODER, resp.body, "directory").id

    async def _upload(self, directory_id: str, item: Item) -> None:
        path = resolve(self._root, item.file)
        size = (await anyio.Path(path).stat()).st_size
        try:
            resp = await self._api.http.upload_file(
                str(path),
                f"{_DIRECTORIES}/{directory_id}/files/upload",
                fields={"unique_id": item.custom_id, "display_name": path.name},
                file_field="upload_file",
                filename=path.name,
                length=size,
                content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
            )
        except ProviderError as exc:
            raise self._api.explained(exc) from exc
        self._api.decode(FILE_DECODER, resp.body, "directory file")
