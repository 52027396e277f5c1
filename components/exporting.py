"""Figure and table export: bytes for PNG/SVG/PDF/HTML, CSV/JSON, and a reproducible zip bundle.

Pure functions (no streamlit): the pages' download buttons and the `python -m logitscope` command
line share them. Static images come from kaleido 1.x driving a Chrome/Chromium that is already
installed (Debian's `chromium`); nothing here ever downloads a browser. One browser process is
kept open and reused across calls (it closes itself after a few idle minutes), because starting
Chromium costs seconds while rendering one figure in a warm browser costs a fraction of that.
"""
from __future__ import annotations

import asyncio
import atexit
import datetime as _dt
import functools
import io
import json
import math
import os
import platform
import re
import shutil
import threading
import unicodedata
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from importlib import metadata as _md
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.errors import LogitscopeError

STATIC_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
FIGURE_FORMATS: tuple[str, ...] = STATIC_FORMATS + ("html",)
TABLE_FORMATS: tuple[str, ...] = ("csv", "json")
MIME_TYPES: dict[str, str] = {
    "png": "image/png",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
    "html": "text/html",
    "csv": "text/csv",
    "json": "application/json",
    "zip": "application/zip",
}

NO_BROWSER_MESSAGE = (
    "Static export (PNG/SVG/PDF) needs Chrome or Chromium; install Debian's chromium package "
    "or set LOGITSCOPE_CHROME; HTML export still works."
)
# Absolute locations tried after LOGITSCOPE_CHROME and before PATH (tests may replace them).
BROWSER_CANDIDATES: tuple[str, ...] = ("/usr/bin/chromium",)
BROWSER_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

RENDER_TIMEOUT_S = 90.0  # one figure, warm browser included start-up
IDLE_CLOSE_S = 300.0  # a browser unused this long is closed; the next export starts a new one
DEFAULT_SCALE = {"png": 2.0}  # PNG at 2x for crisp slides and papers; vector formats at 1x

_STACK = (
    "torch", "transformers", "tokenizers", "safetensors", "accelerate", "peft",
    "huggingface_hub", "streamlit", "plotly", "kaleido", "choreographer",
    "scikit-learn", "umap-learn", "numpy", "pandas",
)  # fmt: skip


class ExportError(LogitscopeError):
    """A figure or table could not be exported (no browser, unknown format, render failure)."""


# --------------------------------------------------------------------------- browser discovery


def _executable(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_file() and os.access(p, os.X_OK)


def find_browser() -> str:
    """Path of the Chrome/Chromium used for static export; raises ExportError if there is none.

    Order: $LOGITSCOPE_CHROME (a path or a name on PATH; if set it must work), then
    BROWSER_CANDIDATES, then BROWSER_NAMES on PATH.
    """
    explicit = os.environ.get("LOGITSCOPE_CHROME", "").strip()
    if explicit:
        found = explicit if _executable(explicit) else shutil.which(explicit)
        if found and _executable(found):
            return str(found)
        raise ExportError(f"No browser at LOGITSCOPE_CHROME={explicit!r}. {NO_BROWSER_MESSAGE}")
    for candidate in BROWSER_CANDIDATES:
        if _executable(candidate):
            return candidate
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found and _executable(found):
            return found
    raise ExportError(NO_BROWSER_MESSAGE)


def static_export_available() -> tuple[bool, str]:
    """(True, browser path) if PNG/SVG/PDF export can run here, else (False, the reason)."""
    try:
        return True, find_browser()
    except ExportError as err:
        return False, str(err)


# --------------------------------------------------------------------------- persistent renderer


class _Renderer:
    """One kaleido browser on a private event-loop thread, shared by all callers under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._kaleido: Any = None
        self._browser: str | None = None
        self._idle_handle: asyncio.TimerHandle | None = None

    def render(self, fig_dict: dict, opts: dict, browser: str, timeout: float) -> bytes:
        """Render fig_dict with kaleido's calc_fig in the shared browser (started on demand).

        A failure other than a time-out is retried once in a fresh browser (it may have died).
        """
        try:
            return self._render_once(fig_dict, opts, browser, timeout)
        except (TimeoutError, KeyboardInterrupt):
            raise
        except Exception:  # noqa: BLE001
            return self._render_once(fig_dict, opts, browser, timeout)

    def _render_once(self, fig_dict: dict, opts: dict, browser: str, timeout: float) -> bytes:
        with self._lock:
            if self._kaleido is None or self._browser != browser or not self._alive():
                self._close_locked()
                self._open_locked(browser, timeout)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._cancel_idle)
            future = asyncio.run_coroutine_threadsafe(
                self._kaleido.calc_fig(fig_dict, opts=opts), self._loop
            )
            try:
                data = future.result(timeout=timeout)
            except BaseException:
                future.cancel()
                self._close_locked()  # a failed or hung render may leave the tab broken
                raise
            self._loop.call_soon_threadsafe(self._schedule_idle)
            return data

    def close(self) -> None:
        """Close the browser and stop the loop thread (idempotent)."""
        with self._lock:
            self._close_locked()

    # -- internals (called with self._lock held, except the idle callbacks) --

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _open_locked(self, browser: str, timeout: float) -> None:
        import kaleido  # deferred: importing it is not free and HTML export never needs it

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="logitscope-kaleido", daemon=True)
        thread.start()
        self._loop, self._thread, self._browser = loop, thread, browser

        async def _open() -> Any:
            # mathjax=False: no CDN fetch (we run offline); plotly.js comes from the plotly package.
            k = kaleido.Kaleido(n=1, timeout=timeout, mathjax=False, path=browser, headless=True)
            await k.open()
            return k

        try:
            self._kaleido = asyncio.run_coroutine_threadsafe(_open(), loop).result(timeout=timeout)
        except BaseException:
            self._close_locked()
            raise

    def _close_locked(self) -> None:
        loop, thread, k = self._loop, self._thread, self._kaleido
        self._loop = self._thread = self._kaleido = self._browser = None
        if loop is None:
            return
        if thread is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(_shutdown(k), loop).result(timeout=20)
            except BaseException:  # noqa: BLE001 - best effort: the process may already be gone
                pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()

    def _cancel_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _schedule_idle(self) -> None:
        self._cancel_idle()
        if self._loop is not None:
            self._idle_handle = self._loop.call_later(IDLE_CLOSE_S, self._idle_close)

    def _idle_close(self) -> None:
        # Runs on the loop thread: never block on the lock (a render may hold it and wait on us).
        if not self._lock.acquire(blocking=False):
            return
        try:
            loop, k = self._loop, self._kaleido
            if loop is None:
                return
            self._loop = self._thread = self._kaleido = self._browser = None

            async def _close_and_stop() -> None:
                try:
                    await _shutdown(k)
                finally:
                    loop.stop()

            loop.create_task(_close_and_stop())
        finally:
            self._lock.release()


async def _shutdown(k: Any) -> None:
    """Close kaleido's browser, then cancel the loop's leftover tasks (choreographer's watchdog)."""
    try:
        if k is not None:
            await asyncio.wait_for(k.close(), 15)
    except BaseException:  # noqa: BLE001 - best effort: the process may already be gone
        pass
    me = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for t in rest:
        t.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


_RENDERER = _Renderer()
atexit.register(_RENDERER.close)


def close_browser() -> None:
    """Close the shared export browser now (it restarts on the next static export)."""
    _RENDERER.close()


# --------------------------------------------------------------------------- figures


def _figure_dict(fig: go.Figure | Mapping[str, Any]) -> dict:
    if isinstance(fig, go.Figure):
        return fig.to_dict()
    if isinstance(fig, Mapping):
        return dict(fig)
    raise ExportError(f"Cannot export a {type(fig).__name__}; expected a plotly figure.")


def figure_bytes(
    fig: go.Figure | Mapping[str, Any],
    fmt: str,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
) -> bytes:
    """Encode a plotly figure (or its dict) as png, svg, pdf or self-contained offline html."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise ExportError(f"Unknown figure format {fmt!r}; choose one of {', '.join(FIGURE_FORMATS)}.")
    fig_dict = _figure_dict(fig)
    if fmt == "html":
        figure = go.Figure(fig_dict) if not isinstance(fig, go.Figure) else fig
        html = figure.to_html(include_plotlyjs=True, full_html=True)
        return html.encode("utf-8")

    browser = find_browser()
    layout = fig_dict.get("layout", {}) or {}
    template_layout = ((layout.get("template") or {}).get("layout") or {})
    opts = {
        "format": fmt,
        "width": int(width or layout.get("width") or template_layout.get("width") or 700),
        "height": int(height or layout.get("height") or template_layout.get("height") or 500),
        "scale": float(scale or DEFAULT_SCALE.get(fmt, 1.0)),
    }
    try:
        data = _RENDERER.render(fig_dict, opts, browser, RENDER_TIMEOUT_S)
    except ExportError:
        raise
    except TimeoutError as err:
        raise ExportError(
            f"Static export ({fmt.upper()}) timed out after {RENDER_TIMEOUT_S:.0f} s; "
            "HTML export still works."
        ) from err
    except Exception as err:  # noqa: BLE001 - kaleido/choreographer raise many kinds
        raise ExportError(
            f"Static export ({fmt.upper()}) failed with browser {browser}: "
            f"{type(err).__name__}: {err}. HTML export still works."
        ) from err
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise ExportError(f"Static export ({fmt.upper()}) returned no data; HTML export still works.")
    return bytes(data)


# --------------------------------------------------------------------------- tables

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _neutralise_cell(value: Any) -> Any:
    """Prefix a quote to a string that a spreadsheet would run as a formula; others unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        if _PLAIN_NUMBER.fullmatch(value):
            return value  # "-1.5" is a number to a spreadsheet, not a formula
        return "'" + value
    return value


def _flat_frame(df: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ExportError(f"Cannot export a {type(df).__name__} as a table; expected a DataFrame.")
    if not isinstance(df.index, pd.RangeIndex) or df.index.name is not None:
        df = df.reset_index()
    if isinstance(df.columns, pd.MultiIndex):
        df = df.copy()
        df.columns = ["/".join(str(p) for p in col if str(p)) for col in df.columns]
    return df


def table_csv(df: pd.DataFrame) -> bytes:
    """UTF-8 CSV of df with formula-looking text cells neutralised; numeric columns untouched."""
    df = _flat_frame(df).copy()
    for col in df.columns:
        if not (pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_datetime64_any_dtype(df[col])):
            df[col] = df[col].map(_neutralise_cell).astype(object)
    df.columns = [_neutralise_cell(str(c)) for c in df.columns]
    return df.to_csv(index=False, lineterminator="\r\n").encode("utf-8")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (_dt.datetime, _dt.date, pd.Timestamp)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def table_json(df: pd.DataFrame) -> bytes:
    """UTF-8 JSON list of row records; NaN and infinities become null, dates ISO 8601."""
    df = _flat_frame(df)
    text = df.to_json(orient="records", date_format="iso", force_ascii=False, default_handler=str)
    records = _finite_or_none(json.loads(text))
    return json.dumps(records, ensure_ascii=False, allow_nan=False).encode("utf-8")


# --------------------------------------------------------------------------- names, versions, bundle

_RESERVED = {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
MAX_FILENAME_LEN = 100


def safe_filename(text: str, ext: str = "") -> str:
    """A file name of [A-Za-z0-9._-] only: no separators, no leading dot or dash, capped, never empty."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text)
    stem = re.sub(r"\.{2,}", ".", stem)
    stem = re.sub(r"_{2,}", "_", stem).strip("._-")
    clean_ext = re.sub(r"[^A-Za-z0-9]+", "", str(ext)).lower()[:10]
    room = MAX_FILENAME_LEN - (len(clean_ext) + 1 if clean_ext else 0)
    stem = stem[:room].rstrip("._-") or "export"
    head, dot, rest = stem.partition(".")
    if head.lower() in _RESERVED:  # Windows: "NUL.txt" is the device NUL too, so mark the part before the dot
        stem = head + "_" + dot + rest
    return f"{stem}.{clean_ext}" if clean_ext else stem


def package_versions() -> dict[str, str | None]:
    """Versions of python and the stack's packages (None where one is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _STACK:
        try:
            versions[name] = _md.version(name)
        except _md.PackageNotFoundError:
            versions[name] = None
    return versions


def _unique(name: str, used: set[str]) -> str:
    if name not in used:
        used.add(name)
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    i = 2
    while True:
        candidate = f"{stem}-{i}.{ext}" if ext else f"{stem}-{i}"
        if candidate not in used:
            used.add(candidate)
            return candidate
        i += 1


BUNDLE_PLOTLYJS = "plotly.min.js"


@functools.lru_cache(maxsize=1)
def _plotlyjs() -> bytes:
    """plotly.js as shipped with the installed plotly (offline, about 4.8 MB)."""
    from plotly.offline import get_plotlyjs
    return get_plotlyjs().encode("utf-8")


def _bundle_html(fig: go.Figure | Mapping[str, Any]) -> bytes:
    """A figure's HTML for a bundle: loads the bundle's one shared ../plotly.min.js (works offline, unzipped)."""
    figure = fig if isinstance(fig, go.Figure) else go.Figure(_figure_dict(fig))
    return figure.to_html(include_plotlyjs=f"../{BUNDLE_PLOTLYJS}", full_html=True).encode("utf-8")


def build_bundle(
    figures: Mapping[str, go.Figure],
    tables: Mapping[str, pd.DataFrame],
    metadata: Mapping[str, Any],
    formats: Sequence[str] = ("png", "svg", "html"),
) -> bytes:
    """Zip of figures/<name>.<fmt>, data/<name>.csv|.json and metadata.json (+ versions, time).

    If static export is unavailable, the figures still go in as HTML (added even when "html" was
    not asked for) and metadata.json records why the static formats are missing.
    """
    fmts = [f.lower().lstrip(".") for f in formats]
    unknown = [f for f in fmts if f not in FIGURE_FORMATS]
    if unknown:
        raise ExportError(f"Unknown figure format(s) {unknown}; choose from {', '.join(FIGURE_FORMATS)}.")
    static_error: str | None = None
    files: list[str] = []
    used: set[str] = {BUNDLE_PLOTLYJS}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, fig in figures.items():
            stem = safe_filename(name)
            wanted = list(dict.fromkeys(fmts))
            for fmt in wanted:
                if fmt in STATIC_FORMATS and static_error is not None:
                    continue
                try:
                    data = _bundle_html(fig) if fmt == "html" else figure_bytes(fig, fmt)
                except ExportError as err:
                    if fmt not in STATIC_FORMATS:
                        raise
                    static_error = str(err)
                    continue
                path = _unique(f"figures/{stem}.{fmt}", used)
                zf.writestr(path, data)
                files.append(path)
            if static_error is not None and "html" not in wanted:
                path = _unique(f"figures/{stem}.html", used)
                zf.writestr(path, _bundle_html(fig))
                files.append(path)
        if any(f.endswith(".html") for f in files):  # one plotly.js for all figures, beside figures/
            zf.writestr(BUNDLE_PLOTLYJS, _plotlyjs())
            files.append(BUNDLE_PLOTLYJS)
        for name, df in tables.items():
            stem = safe_filename(name)
            for fmt, encode in (("csv", table_csv), ("json", table_json)):
                path = _unique(f"data/{stem}.{fmt}", used)
                zf.writestr(path, encode(df))
                files.append(path)
        meta = dict(metadata)
        for path, data in (meta.pop("prompt_files", None) or {}).items():  # the exact prompts of every input set
            path = _unique(path, used)
            zf.writestr(path, data)
            files.append(path)
        meta["package_versions"] = package_versions()
        meta["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        meta["static_export"] = {
            "formats": [f for f in fmts if f in STATIC_FORMATS],
            "available": static_error is None,
            "reason": static_error,
        }
        meta["files"] = files
        text = json.dumps(_finite_or_none(json.loads(json.dumps(meta, default=_json_default))),
                          indent=2, ensure_ascii=False, allow_nan=False)
        zf.writestr("metadata.json", text.encode("utf-8"))
    return buf.getvalue()
