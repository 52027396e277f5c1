"""The settings of a page whose widgets are spread over tabs and parts (the steering page): each widget drawn is
remembered, a setting whose widget is not on the page keeps what a link or an earlier run left, defaults that come
from the model or the data are tracked apart (a link keeps them None), and the declared ``parts`` setting holds the
parts whose button was pressed."""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from analysis.core.errors import InputError
from components import page_kit as kit
from components.settings import field_of, fields_of, from_text, to_text
from components.settings_ui import widget, widget_key


@dataclass
class PageSettings:
    """The widgets a run drew (``drawn``), the page defaults from the model or the data (``derived``) and the parts
    switched on, for settings class ``cls`` under widget prefix ``key``."""

    cls: type
    key: str
    drawn: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, Any] = field(default_factory=dict)

    @property
    def parts_key(self) -> str:
        return f"{self.key}__parts_on"

    def draw(self, name: str, where: Any = None, **kw: Any) -> Any:
        """The widget of setting ``name`` (settings_ui.widget), its value remembered for the settings of this run."""
        self.drawn[name] = widget(self.cls, name, self.key, where, **kw)
        return self.drawn[name]

    def page_default(self, name: str, value: Any) -> None:
        """Start setting ``name``'s widget on a default from the model or the data (again when that default changes
        and the widget still holds the previous one)."""
        f = field_of(self.cls, name)
        self.derived[name] = value
        kit.model_default(widget_key(self.key, name), to_text(f, value) if typing.get_origin(f.base) is tuple else value)

    def layer_slider(self, name: str, layers: list[int], default: int) -> int:
        """A display layer as a slider over ``layers``, starting on ``default``."""
        f, k = field_of(self.cls, name), widget_key(self.key, name)
        if k in st.session_state and st.session_state[k] not in layers:
            del st.session_state[k]
        self.page_default(name, default)
        self.drawn[name] = st.select_slider(f.label, options=list(layers), key=k, help=f.spec.help)
        return self.drawn[name]

    def held(self, name: str) -> Any:
        """A setting whose widget is not on the page in this state: the value a link or an earlier run left, else
        the default."""
        f = field_of(self.cls, name)
        value = st.session_state.get(widget_key(self.key, name), f.default)
        if isinstance(value, str) and typing.get_origin(f.base) is tuple:
            try:
                return from_text(f, value)
            except InputError:
                return f.default
        return tuple(value) if isinstance(value, list) else value

    def _parts(self, value: Any) -> tuple[str, ...]:
        """Parts as text ("monitor,flag"), a list or a set -> the known ones in the declared order."""
        f = field_of(self.cls, "parts")
        if isinstance(value, str):
            try:
                value = from_text(f, value)
            except InputError:
                value = ()
        return tuple(p for p in f.spec.choices if p in value)

    def parts_on(self) -> tuple[str, ...]:
        """The parts whose button was pressed, or that a link turned on (apply_query puts "<key>.parts" into the
        setting's widget key; no widget draws it), in the declared order; none at first."""
        linked = st.session_state.pop(widget_key(self.key, "parts"), None)
        if linked is not None:
            st.session_state[self.parts_key] = self._parts(linked)
        return st.session_state.get(self.parts_key, ())

    def turn_on(self, *parts: str) -> None:
        """Switch parts on (they run on this and every later run)."""
        st.session_state[self.parts_key] = self._parts(set(self.parts_on()) | set(parts))

    def current(self) -> Any:
        """The settings of this run: the widgets drawn so far, the others as held, the parts switched on."""
        values = {f.name: self.held(f.name) for f in fields_of(self.cls)}
        values.update(self.drawn, parts=self.parts_on())
        return self.cls(**values)

    def for_link(self, settings: Any) -> Any:
        """The settings as the link carries them: a default from the model or the data stays None."""
        from dataclasses import replace

        return replace(settings, **{n: None for n, v in self.derived.items() if getattr(settings, n) == v})
