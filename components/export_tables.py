"""Table export: a DataFrame as UTF-8 CSV (formula-looking cells neutralised) or as JSON row records.

Also the JSON helpers the bundle's metadata.json uses: a default encoder for numpy, dates, paths and dataclasses,
and the pass that turns NaN and infinities into null.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.export_errors import ExportError

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


def json_default(obj: Any) -> Any:
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


def finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def table_json(df: pd.DataFrame) -> bytes:
    """UTF-8 JSON list of row records; NaN and infinities become null, dates ISO 8601."""
    df = _flat_frame(df)
    text = df.to_json(orient="records", date_format="iso", force_ascii=False, default_handler=str)
    records = finite_or_none(json.loads(text))
    return json.dumps(records, ensure_ascii=False, allow_nan=False).encode("utf-8")
