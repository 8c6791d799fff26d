"""Progress for the long steps of the CLI: a live bar on a terminal, one plain line per step elsewhere.

Every step ends with one line, `==> title: 51 records in 0.3 s`, the same shape scripts/install.sh
prints, so a log or a CI run still says what each step did and how long it took. The bar (rich) is
drawn only when the stream is a terminal, and on stderr: stdout stays for what a command prints as
data (`services start` prints URLs to paste).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress

Advance = Callable[[int], None]

__all__ = ["Advance", "step"]


@contextmanager
def step(title: str, total: int | None = None, unit: str = "", stream: TextIO | None = None) -> Iterator[Advance]:
    """Show `title` while the block runs; the block calls the yielded function with how many items it did.

    Without a `total` a terminal shows a spinner and the clock. When the block raises, no summary is
    written: the error says what happened."""
    out = stream if stream is not None else sys.stderr
    done = 0
    started = time.monotonic()
    with ExitStack() as stack:
        bar = stack.enter_context(_bar(out, counted=total is not None)) if out.isatty() else None
        task = bar.add_task(title, total=total) if bar is not None else None

        def advance(count: int = 1) -> None:
            nonlocal done
            done += count
            if bar is not None and task is not None:
                bar.advance(task, count)

        yield advance
    what = f"{done} {unit}".rstrip() if total is not None else "done"
    out.write(f"==> {title}: {what} in {time.monotonic() - started:.1f} s\n")
    out.flush()


def _bar(out: TextIO, counted: bool) -> Progress:
    # Imported here: rich takes a quarter of a second to import, which no log or CI run should pay.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}")]
    if counted:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    # Transient: the bar gives way to the summary line, so a finished step is one line either way.
    return Progress(*columns, console=Console(file=out), transient=True)
