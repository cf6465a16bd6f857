"""Jinja2 templates (package data) and the one function that renders them.

StrictUndefined turns a missing variable into an error instead of an empty string in a config
file; every template must print ``managed_by`` so an operator who opens the file learns who owns it.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Any

import jinja2

HEADER = "Managed by appliance ({name}): local changes are overwritten on the next install."


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files(__name__))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # config files, not HTML: values are validated before they get here
    )


def render(template: str, comment: str = "#", **context: Any) -> str:
    """Render ``template``; ``managed_by`` is the header line in the file's comment syntax."""
    header = HEADER.format(name=template)
    managed_by = f"<!-- {header} -->" if comment == "xml" else f"{comment} {header}"
    return _environment().get_template(template).render(managed_by=managed_by, **context)


def template_names() -> list[str]:
    return sorted(_environment().list_templates(extensions=["j2"]))
