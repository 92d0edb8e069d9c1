"""The DVC workspace of a CASEPILOT_HOME: the folder where `dvc repro` runs dvc.yaml for it.

dvc.yaml writes every path under `.casepilot/` and reads `params.yaml`, both relative to the
folder DVC runs in. So a home needs a folder where `.casepilot` is that home:

- the default home (`<clone>/.casepilot`): the clone itself, so `dvc repro` at the clone root
  works as the README says, with the clone's `params.yaml` and `dvc.lock`;
- any other home: `$CASEPILOT_HOME/pipeline/`, created on first use: a DVC repo without git
  (`core.no_scm`: DVC refuses outputs behind a symlink inside a git repo), its cache inside the
  home, holding symlinks to the clone's `dvc.yaml` and code folders and `.casepilot` → the
  home, and `params.yaml`: the params file it was given (e.g. the demo's merged params) with
  every default filled in (DVC refuses a stage whose declared params key is missing), written
  again whenever it changes. Its own `dvc.lock` records that home's data and model hashes.
  `.dvcignore` keeps DVC out of the loop `.casepilot/pipeline/.casepilot/...`.

The Prefect `retrain` flow, `casepilot pipeline workspace` and the tests all get it from
`dvc_workspace`, so a scheduled retrain and `cd <workspace> && dvc repro` are one computation.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.home import DEFAULT_HOME, Home
from pipelines.registry.lineage import REPO, dvc_data_version

WORKSPACE_DIR = "pipeline"  # under a non-default CASEPILOT_HOME
CODE_LINKS = ("dvc.yaml", "pipelines", "configs")  # dvc.yaml deps; configs: DeepSpeed JSONs
DVCIGNORE = """\
# Written by casepilot (pipelines/repro/workspace.py).
# .casepilot links to the home, which holds this folder: never walk into it again.
.casepilot/pipeline/
__pycache__/
"""


@dataclass(frozen=True)
class DvcWorkspace:
    """Where DVC runs for one home: `root` (cwd of `dvc repro`), its params file and home."""

    root: Path
    params_file: Path
    home: Path

    @property
    def lock(self) -> Path:
        return self.root / "dvc.lock"

    def data_version(self) -> str | None:
        """DVC's hash of the accepted data in this workspace's dvc.lock (None before intake)."""
        return dvc_data_version(self.lock)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a `dvc`/`casepilot` subprocess here: this home, this venv first."""
        env = dict(os.environ if base is None else base)
        env["CASEPILOT_HOME"] = str(self.home)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


def is_default_home(home: Home, repo: Path = REPO) -> bool:
    """True when `home` is the clone's own `.casepilot` (CASEPILOT_HOME unset)."""
    return home.root.resolve() == (repo / DEFAULT_HOME).resolve()


def dvc_workspace(params_file: str | Path, home: Home, *, repo: Path = REPO) -> DvcWorkspace:
    """Resolve (and on first use create) the DVC workspace of `home` running `params_file`.

    Fails with the fix when the params file is missing, or when the default home is asked to
    run another params file than the clone's (its workspace is the clone, which reads
    `<clone>/params.yaml`).
    """
    params = Path(params_file).expanduser().resolve()
    if not params.is_file():
        raise FileNotFoundError(
            f"{params_file}: params file not found; DVC stages read it as params.yaml, so pass "
            "an existing file (e.g. the clone's params.yaml)"
        )
    if is_default_home(home, repo):
        if params != (repo / "params.yaml").resolve():
            raise ValueError(
                f"the default home's DVC workspace is the clone {repo}, which runs "
                f"{repo / 'params.yaml'}, not {params}; edit that file, or set CASEPILOT_HOME to "
                "another folder to get a workspace of its own with this params file"
            )
        return DvcWorkspace(repo, params, home.root.resolve())
    root = home.root.resolve() / WORKSPACE_DIR
    root.mkdir(parents=True, exist_ok=True)
    for name in CODE_LINKS:
        _link(root / name, repo / name)
    _write_params(root / "params.yaml", params, home)
    _link(root / DEFAULT_HOME, home.root.resolve())
    ignore = root / ".dvcignore"
    if not ignore.is_file() or ignore.read_text(encoding="utf-8") != DVCIGNORE:
        ignore.write_text(DVCIGNORE, encoding="utf-8")
    if not (root / ".dvc").is_dir():
        from dvc.repo import Repo

        dvc_log = logging.getLogger("dvc")  # its "Initialized" line would go to stdout, which
        level = dvc_log.level  # may be `$(casepilot pipeline workspace)`
        dvc_log.setLevel(logging.WARNING)
        try:
            Repo.init(str(root), no_scm=True).close()  # cache: <root>/.dvc/cache, in the home
        finally:
            dvc_log.setLevel(level)
    return DvcWorkspace(root, params, home.root.resolve())


def _write_params(path: Path, source: Path, home: Home) -> None:
    """Write `source` with every default filled in (validated; environment overrides left out,
    so no endpoint credential lands in the file), only when the content changes."""
    import yaml

    from pipelines.config import load_params

    values = load_params(source, home=home, env={}).model_dump(mode="json")
    text = f"# written by casepilot from {source}: edit that file, not this one\n"
    text += yaml.safe_dump(values, sort_keys=False)
    if path.is_symlink():
        path.unlink()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _link(path: Path, target: Path) -> None:
    """Make `path` a symlink to `target`, re-pointing an old link; never replace a real file."""
    if path.is_symlink():
        if path.resolve() == target.resolve():
            return
        path.unlink()
    elif path.exists():
        raise FileExistsError(
            f"{path} exists and is not a link: the DVC workspace links it to {target}; "
            "move it away (the workspace holds only links and DVC's own files)"
        )
    path.symlink_to(target, target_is_directory=target.is_dir())
