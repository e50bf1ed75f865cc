"""Running the service in one or several worker processes.

Python runs one request's code at a time per process, so a server answers at most one core's worth of
requests per worker. ``--workers auto`` starts one worker per usable core (at most ``MAX_AUTO_WORKERS``,
since each holds its own models), each opening the index on its own: readers of an index are safe in
any number of processes (a view notices changes another process logged), and writers take a lock
shared across processes. A server that accepts writes gets one worker under ``auto``: a write arriving
while another worker writes would be refused with Retry-After rather than wait its turn.

Workers are started by uvicorn and build their application from the settings this module puts in the
environment (:func:`app_from_environment`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from rankstack.serve.service import SearchService

MAX_AUTO_WORKERS = 8
SETTINGS_VARIABLE = "RANKSTACK_SERVE_SETTINGS"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_workers(spec: str, writes_enabled: bool, cores: int | None = None) -> int:
    """The number of worker processes ``--workers SPEC`` asks for: ``auto`` or a positive whole number."""
    text = spec.strip().lower()
    if text == "auto":
        return 1 if writes_enabled else min(cores or usable_cores(), MAX_AUTO_WORKERS)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--workers takes 'auto' or a positive whole number, not '{spec}'")
    return int(text)


@dataclass(frozen=True)
class ServeSettings:
    """What each worker needs to open the same service."""

    index_dir: str
    presets: list[str] = field(default_factory=list)
    api_key: str | None = None
    allow_any_pipeline: bool = False
    data_root: str | None = None
    model_root: str | None = None

    def open_service(self) -> SearchService:
        from rankstack.index import Index
        from rankstack.serve.service import SearchService

        return SearchService.open(Index.open(self.index_dir), presets=self.presets, api_key=self.api_key,
                                  allow_any_pipeline=self.allow_any_pipeline,
                                  data_root=Path(self.data_root) if self.data_root else None,
                                  model_root=Path(self.model_root) if self.model_root else None)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


def app_from_environment() -> FastAPI:
    """The application of one worker process, from the settings the parent process left in the environment."""
    from rankstack.serve.app import create_app

    return create_app(ServeSettings.from_json(os.environ[SETTINGS_VARIABLE]).open_service())


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Math-library threads for each worker, so that workers together use the cores without crowding them."""
    return max(1, (cores or usable_cores()) // workers)


def run(settings: ServeSettings, host: str, port: int, workers: int, service: SearchService | None = None) -> None:
    """Serve until stopped: in this process with ``service`` when one worker, else in ``workers`` processes."""
    import uvicorn

    options: dict[str, Any] = {"host": host, "port": port, "log_level": "warning", "access_log": False}
    if workers == 1:
        from rankstack.serve.app import create_app

        uvicorn.run(create_app(service or settings.open_service()), **options)
        return
    os.environ[SETTINGS_VARIABLE] = settings.to_json()
    for variable in _THREAD_VARIABLES:  # read by the math libraries when a worker first imports them
        os.environ.setdefault(variable, str(threads_per_worker(workers)))
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)
