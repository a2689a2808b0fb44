"""User strategies: ``$FBT_HOME/strategies/*.py`` discovered by the template library.

A user strategy is one Python file holding one (or more) functions decorated
exactly like the built-in templates::

    # $FBT_HOME/strategies/momentum.py
    import numpy as np
    from fbt_pipelines.engine.strategies import register_strategy

    @register_strategy("momentum", "Long when the close is above its value `lookback` bars ago, short below.")
    def momentum(close: np.ndarray, lookback: int = 60) -> np.ndarray:
        past = np.roll(close, lookback)
        past[:lookback] = np.nan
        return np.nan_to_num(np.sign(close - past))

The first parameters are the input columns named in ``inputs`` (default
``("close",)``: back-adjusted closes in points), in that order; every other
parameter is a number with a default (int or float) and becomes a
``--param`` / launchpad parameter. The function returns one signal per bar
(units of a standard risk position, decided at that bar's close).

Files are loaded with :mod:`importlib` from their path (never ``eval``), in
name order, each into its own module ``fbt_user_strategies.<stem>``. A file
that fails to import, registers nothing, reuses a taken name or has an
unusable signature is skipped and reported as a :class:`StrategyProblem`
naming the file (and the line, function or parameter); the other files still
load. Files whose name starts with ``_`` are ignored (helpers).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StrategyProblem", "load_user_strategies", "strategies_folder", "sync_user_strategies", "user_problems"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE_PREFIX = "fbt_user_strategies"


@dataclass(frozen=True)
class StrategyProblem:
    """Why one user strategy file (or one function in it) was not loaded."""

    file: Path
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def strategies_folder(home: Path) -> Path:
    """``<home>/strategies``: a trader's strategy files under ``FBT_HOME`` (may not exist)."""
    return home / "strategies"


# state of the last load: folder + (name, mtime, size) of its files -> loaded names, problems
_state: dict[str, object] = {"key": None, "names": [], "problems": []}
_lock = threading.RLock()  # sweeps validate parameters from several threads


def _folder_key(folder: Path) -> tuple:
    try:
        files = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
        return (str(folder), tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files))
    except OSError:
        return (str(folder), ())


def _where(exc: BaseException, path: Path) -> str:
    """'line N' of the innermost frame inside ``path`` (or of a SyntaxError)."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"line {exc.lineno}: "
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f"line {lines[-1]}: " if lines else ""


def _check_template(template, path: Path) -> str | None:
    """None if the template is usable, else what is wrong (naming function / parameter)."""
    fn_name = getattr(template.fn, "__name__", repr(template.fn))
    if not isinstance(template.name, str) or not _NAME.fullmatch(template.name):
        return f"strategy name {template.name!r} (function {fn_name}) must be letters, digits and '_'"
    if not isinstance(template.description, str) or not template.description.strip():
        return f"strategy {template.name!r} (function {fn_name}) needs a description"
    if not callable(template.fn):
        return f"strategy {template.name!r}: {fn_name} is not a function"
    params = list(inspect.signature(template.fn).parameters.values())
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            return f"strategy {template.name!r}: function {fn_name} may not take *{p.name} / **{p.name}"
    head = [p.name for p in params[: len(template.inputs)]]
    if head != list(template.inputs):
        return (f"strategy {template.name!r}: function {fn_name} must take its inputs {list(template.inputs)} "
                f"as its first parameters, it takes {head}")
    for p in params[len(template.inputs):]:
        if p.default is inspect.Parameter.empty:
            return (f"strategy {template.name!r}: parameter {p.name!r} of {fn_name} needs a default "
                    f"(a number), or add it to inputs=(...) if it is a data column")
        if isinstance(p.default, bool) or not isinstance(p.default, (int, float)):
            return (f"strategy {template.name!r}: parameter {p.name!r} of {fn_name} has default {p.default!r}; "
                    "parameters must be numbers (int or float)")
    return None


def load_user_strategies(folder: Path, taken: set[str]) -> tuple[list, list[StrategyProblem]]:
    """Import every ``folder/*.py`` and return (templates, problems).

    ``taken`` holds names already registered (built-ins); a user strategy may
    not reuse one. Templates carry ``source`` = the file path. Nothing is
    registered here (see :func:`sync_user_strategies`).
    """
    from fbt_pipelines.engine import strategies as registry

    templates, problems = [], []
    names = set(taken)
    if not folder.is_dir():
        return templates, problems
    for path in sorted(p for p in folder.glob("*.py") if not p.name.startswith("_")):
        path = path.resolve()
        module_name = f"{_MODULE_PREFIX}.{path.stem}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                problems.append(StrategyProblem(path, "cannot be loaded as a Python module"))
                continue
            module = importlib.util.module_from_spec(spec)
            collected: list = []
            previous, registry._collector = registry._collector, collected
            try:
                spec.loader.exec_module(module)
            finally:
                registry._collector = previous
        except (Exception, SystemExit) as exc:  # the user's file: report it, keep the others
            problems.append(StrategyProblem(path, f"{_where(exc, path)}{type(exc).__name__}: {exc}"))
            continue
        if not collected:
            own = [n for n, v in vars(module).items()
                   if inspect.isfunction(v) and v.__module__ == module_name and not n.startswith("_")]
            found = f" (it defines {', '.join(own)} but none is registered)" if own else " (it defines no function)"
            problems.append(StrategyProblem(
                path, f"registers no strategy{found}: decorate the signal function with "
                      "@register_strategy(\"name\", \"description\") from fbt_pipelines.engine.strategies"))
            continue
        sys.modules[module_name] = module
        for template in collected:
            problem = _check_template(template, path)
            if problem is None and template.name in names:
                where = "fbt's template library" if template.name in taken else "another user file"
                problem = f"strategy name {template.name!r} is already taken by {where}; pick another name"
            if problem:
                problems.append(StrategyProblem(path, problem))
                continue
            names.add(template.name)
            templates.append(template.with_source(str(path)))
    return templates, problems


def sync_user_strategies(folder: Path | None = None) -> list[StrategyProblem]:
    """Bring the registry in line with the strategy files in ``folder`` and
    return the load problems (``folder`` None: the folder of the last sync).

    Cheap when nothing changed (one directory listing); reloads every user
    file when a file was added, removed or modified, or the folder moved.
    """
    if folder is None:
        if _state["key"] is None:
            return []
        folder = Path(_state["key"][0])  # type: ignore[index]
    key = _folder_key(folder)
    if key == _state["key"]:
        return list(_state["problems"])  # type: ignore[arg-type]
    with _lock:
        if key != _state["key"]:
            _reload(folder, key)
        return list(_state["problems"])  # type: ignore[arg-type]


def _reload(folder: Path, key: tuple) -> None:
    from fbt_pipelines.engine import strategies as registry

    for name in _state["names"]:  # type: ignore[union-attr]
        registry.STRATEGIES.pop(name, None)
    for name in [m for m in sys.modules if m.startswith(_MODULE_PREFIX + ".")]:
        del sys.modules[name]
    builtin = {n for n, t in registry.STRATEGIES.items() if t.source is None}
    templates, problems = load_user_strategies(folder, builtin)
    for t in templates:
        registry.STRATEGIES[t.name] = t
    _state.update(key=key, names=[t.name for t in templates], problems=problems)


def user_problems(folder: Path | None = None) -> list[StrategyProblem]:
    """Problems of the current load (after syncing ``folder``)."""
    return sync_user_strategies(folder)
