"""YAML errors as people read them: one line saying what is wrong and where."""

from __future__ import annotations

import yaml


def yaml_error_line(e: yaml.YAMLError) -> str:
    """What is wrong and where (line and column, counted from 1), on one line.

    PyYAML's own text spans several lines (the context, a copy of the line, a caret): cut to its
    first line it loses the position, which is what a person needs.
    """
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = f" ({e.context})" if e.context else ""
        return f"{where}{e.problem or 'malformed'}{context}"
    return " ".join(str(e).split())
