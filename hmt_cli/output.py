"""The one output sink: human (Rich, stderr) / ``--json`` (stdout) / ``--quiet``.

Results go to stdout only in JSON mode; tables, warnings, progress and errors go to stderr, so
``hmt ... --json | jq`` always sees exactly one JSON document.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from .errors import HmtError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Output"]

PROGRESS_AFTER_S = 2.0  # a progress bar only for runs long enough to wonder about


class Output:
    def __init__(self, json_mode: bool = False, quiet: bool = False, width: int | None = None) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self._width = width
        self._err: Console | None = None
        self._start = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    @property
    def err(self) -> Console:
        """The Rich console on stderr, created on first use: importing Rich costs ~0.1 s of `hmt --help`."""
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, width=self._width, highlight=False)
        return self._err

    def show(self, *renderables: Any) -> None:
        if not self.quiet:
            for item in renderables:
                self.err.print(item)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[yellow]hmt: warning:[/yellow] {message}", markup=True)

    def result(self, data: Any) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
            sys.stdout.flush()

    def error(self, message: HmtError | str) -> None:
        # Plain print, no markup: messages contain user paths and brackets.
        text = message.one_line() if isinstance(message, HmtError) else message
        print(text, file=sys.stderr, flush=True)

    def progress(self, stage: str, done: int, total: int) -> None:
        if self.quiet or time.monotonic() - self._start < PROGRESS_AFTER_S:
            return
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=self.err, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(stage, total=total)
        self._progress.update(self._task, completed=done, total=total, description=stage)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
