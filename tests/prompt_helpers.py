"""Shared by the prompt-set tests (tests/prompts/test_prompts.py, tests/prompts/test_prompt_chat.py): the error of a parse, and
JSONL bytes from objects."""
from __future__ import annotations

import json

import pytest

from analysis.core.errors import PromptSetError
from analysis.prompts import parse_prompt_file


def err_of(filename: str, data: bytes, **kw) -> str:
    with pytest.raises(PromptSetError) as info:
        parse_prompt_file(filename, data, **kw)
    return str(info.value)


def jsonl(*objs) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objs).encode()
