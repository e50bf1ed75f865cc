"""Terminal output: data goes to stdout, progress and logs to stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

stdout = Console(soft_wrap=True)
if not stdout.is_terminal:
    stdout = Console(soft_wrap=True, width=160)  # piped tables: do not squeeze them into 80 columns
# soft_wrap: messages name files; a path broken across lines cannot be copied or grepped
stderr = Console(stderr=True, soft_wrap=True)


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s", style="cyan")


@contextmanager
def progress_bar(description: str, total: int | None = None, unit: str = "docs") -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields ``advance(n)``. Shows rate and ETA when the total is known."""
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    else:
        columns += [TextColumn("{task.completed:,.0f} " + unit)]
    columns += [_RateColumn(unit), TimeElapsedColumn()]
    with Progress(*columns, console=stderr, transient=False, disable=not stderr.is_terminal) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


class ProgressBars:
    """One live display for several bars; ``bars(description, total)`` returns ``advance(n)``.

    Used where the library asks for progress itself (stages preparing an index, for instance).
    """

    def __init__(self) -> None:
        self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), _RateColumn("docs"), TimeRemainingColumn(),
                                  console=stderr, disable=not stderr.is_terminal)

    def __enter__(self) -> ProgressBars:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, description: str, total: int) -> Callable[[int], None]:
        task = self._progress.add_task(description, total=total)
        if not stderr.is_terminal:
            stderr.print(f"{description} ...")
        return lambda n: self._progress.advance(task, n)
