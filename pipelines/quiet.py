"""Quiet by default: the project's own output on the console, libraries' chatter in a log file.

`configure_output()` is called by every entry point (the `casepilot` command, the lifecycle flow
runs) before the heavy libraries are imported. Quiet mode uses each library's own switch, most of
them environment variables read on import, so every child process inherits it: the services
`casepilot up` starts, the DVC stages a retrain runs, Prefect flow runs. Python warnings and
library log records go to `$CASEPILOT_HOME/logs/casepilot.log`; the project's own records
(`pipelines`, `monitoring`, `bentos`, `flows` and a flow run's log) still reach the console.
`casepilot --verbose` (CASEPILOT_VERBOSE=1, inherited the same way) gives back every library's
default output.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

VERBOSE_ENV = "CASEPILOT_VERBOSE"
LOG_FILE = "casepilot.log"
OWN_LOGGERS = ("pipelines", "monitoring", "bentos", "flows")  # the project's own loggers
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")  # a flow run's log: its own progress
# libraries that print through a handler of their own, never propagate and have no switch
OWN_HANDLER_LOGGERS = ("DeepSpeed",)  # "Setting accelerator to CPU" on every CPU-only import

# Each library's own switch, read when the library is imported (also by child processes).
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # load reports ("Some weights ... newly initialized")
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # hub downloads and transformers' weight-loading bars
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_CONFIGURE_LOGGING": "false",  # MLflow's records reach the handlers below instead
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # "🏃 View run ..." (we print the run id)
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # c10 warnings of the C++ core
    "TORCH_LOGS": "-torch",  # torch's Python loggers at ERROR (e.g. the pytree deprecation)
}


def is_verbose(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when CASEPILOT_VERBOSE asks for every library's own output."""
    value = (os.environ if environ is None else environ).get(VERBOSE_ENV, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def quiet_environment(verbose: bool, environ: MutableMapping[str, str] | None = None) -> None:
    """Set (quiet) or take back (verbose) the libraries' switches in `environ`.

    Quiet keeps any value the user set; verbose removes only the values quiet mode would set,
    so a verbose child of a quiet parent gets the libraries' defaults back.
    """
    environ = os.environ if environ is None else environ
    if verbose:
        environ[VERBOSE_ENV] = "1"
        for key, value in QUIET_ENV.items():
            if environ.get(key) == value:
                del environ[key]
        return
    environ.pop(VERBOSE_ENV, None)
    for key, value in QUIET_ENV.items():
        environ.setdefault(key, value)


class ConsoleRecords(logging.Filter):
    """What reaches the console: a flow run's log, warnings and errors. In quiet mode a
    library's warnings stay in the log file: only the project's own and any library's errors."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or _is_under(record.name, RUN_LOGGERS):
            return True
        own = self.verbose or _is_under(record.name, OWN_LOGGERS)
        return own and record.levelno >= logging.WARNING


class ToLogFile(logging.Filter):
    """On a library logger with its own handler: records below ERROR go to the log file only."""

    def __init__(self, to_file: logging.Handler) -> None:
        super().__init__()
        self.to_file = to_file

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        self.to_file.handle(record)
        return False


def _is_under(name: str, parents: tuple[str, ...]) -> bool:
    return any(name == parent or name.startswith(parent + ".") for parent in parents)


class ConsoleHandler(logging.StreamHandler):
    """Writes to the current `sys.stderr` (a test or a redirect may have replaced it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; always stderr
        pass


def _log_file(environ: MutableMapping[str, str]) -> Path:
    from pipelines.home import Home

    return Home.from_env(environ).logs / LOG_FILE


def _own_handlers(log_file: Path) -> list[logging.Handler]:
    """A file handler for every record at INFO and above; a console one (see ConsoleRecords)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file, encoding="utf-8", delay=True)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_file.setLevel(logging.INFO)
    console = ConsoleHandler()
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for handler in (to_file, console):
        handler.casepilot = True  # type: ignore[attr-defined]
    return [to_file, console]


def _route_records(verbose: bool, log_file: Path) -> None:
    """Records to the log file; to the console only what `ConsoleRecords` lets by.

    A console a framework set up already (Prefect's, in a flow run) is kept and filtered the
    same way; ours is added only where there is none. Calling this again replaces ours.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "casepilot", False)]:
        root.removeHandler(handler)
        handler.close()
    to_file, console = _own_handlers(log_file)
    terminals = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    consoles = [h for h in root.handlers if getattr(h, "stream", None) in terminals]
    root.addHandler(to_file)
    if not consoles:
        root.addHandler(console)
        consoles = [console]
    for handler in consoles:
        for old in [f for f in handler.filters if isinstance(f, ConsoleRecords)]:
            handler.removeFilter(old)
        if handler is console or not verbose:  # verbose: a framework's console as it set it
            handler.addFilter(ConsoleRecords(verbose))
    root.setLevel(min(root.getEffectiveLevel(), logging.INFO))
    for name in OWN_HANDLER_LOGGERS:
        library = logging.getLogger(name)
        for old in [f for f in library.filters if isinstance(f, ToLogFile)]:
            library.removeFilter(old)
        if not verbose:
            library.addFilter(ToLogFile(to_file))


def configure_output(verbose: bool | None = None) -> Path:
    """Quiet (default) or verbose output for this process and its children; returns the log file.

    `verbose=None` reads CASEPILOT_VERBOSE, so a child process follows its parent.
    """
    verbose = is_verbose() if verbose is None else verbose
    quiet_environment(verbose)
    log_file = _log_file(os.environ)
    _route_records(verbose, log_file)
    logging.captureWarnings(True)  # Python warnings become `py.warnings` records
    return log_file
