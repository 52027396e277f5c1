"""Figure and table export: bytes for PNG/SVG/PDF/HTML, CSV/JSON, and a reproducible zip bundle.

Pure functions (no streamlit): the pages' download buttons and the `python -m logitscope` command
line share them. Static images come from kaleido 1.x driving a Chrome/Chromium that is already
installed (Debian's `chromium`); nothing here ever downloads a browser. One browser process is
kept open and reused across calls (it closes itself after a few idle minutes), because starting
Chromium costs seconds while rendering one figure in a warm browser costs a fraction of that.

Where the parts live: the exception in components.export_errors, CSV/JSON tables in components.export_tables
and file names and package versions in components.export_files; this module keeps the browser, the figures and
the bundle, and re-exports the moved names.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as _dt
import functools
import io
import json
import os
import shutil
import threading
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from components.export_errors import ExportError as ExportError
from components.export_files import MAX_FILENAME_LEN as MAX_FILENAME_LEN
from components.export_files import package_versions as package_versions
from components.export_files import safe_filename as safe_filename
from components.export_files import unique_name
from components.export_tables import finite_or_none, json_default
from components.export_tables import table_csv as table_csv
from components.export_tables import table_json as table_json

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
            with contextlib.suppress(BaseException):  # best effort: the process may already be gone
                asyncio.run_coroutine_threadsafe(_shutdown(k), loop).result(timeout=20)
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
                path = unique_name(f"figures/{stem}.{fmt}", used)
                zf.writestr(path, data)
                files.append(path)
            if static_error is not None and "html" not in wanted:
                path = unique_name(f"figures/{stem}.html", used)
                zf.writestr(path, _bundle_html(fig))
                files.append(path)
        if any(f.endswith(".html") for f in files):  # one plotly.js for all figures, beside figures/
            zf.writestr(BUNDLE_PLOTLYJS, _plotlyjs())
            files.append(BUNDLE_PLOTLYJS)
        for name, df in tables.items():
            stem = safe_filename(name)
            for fmt, encode in (("csv", table_csv), ("json", table_json)):
                path = unique_name(f"data/{stem}.{fmt}", used)
                zf.writestr(path, encode(df))
                files.append(path)
        meta = dict(metadata)
        for path, data in (meta.pop("prompt_files", None) or {}).items():  # the exact prompts of every input set
            path = unique_name(path, used)
            zf.writestr(path, data)
            files.append(path)
        meta["package_versions"] = package_versions()
        meta["created_utc"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        meta["static_export"] = {
            "formats": [f for f in fmts if f in STATIC_FORMATS],
            "available": static_error is None,
            "reason": static_error,
        }
        meta["files"] = files
        text = json.dumps(finite_or_none(json.loads(json.dumps(meta, default=json_default))),
                          indent=2, ensure_ascii=False, allow_nan=False)
        zf.writestr("metadata.json", text.encode("utf-8"))
    return buf.getvalue()
