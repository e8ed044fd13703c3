"""jinja2 errors as one-line UserErrors naming the template's file and line.

jinja2 reports an undefined name (StrictUndefined) at render time without a line number;
the line is only in the traceback, where jinja2 rewrites the template's frames to carry the
template's own line numbers. `template_error` takes it from there, so a typo such as
`{{ settings.domian }}` reads `recipes/x/main.cf:4: file[2]: undefined: ...`.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from appliancekit.errors import UserError


def template_line(exc: BaseException) -> int | None:
    """The template line an error was raised at (syntax errors carry it; render errors have
    it in their innermost template frame)."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        # jinja2 marks the frames it rewrote to point at template lines this way
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def template_error(
    exc: jinja2.TemplateError,
    *,
    file: Path | str | None,
    field: str | None,
    first_line: int | None = None,
) -> UserError:
    """`exc` as one line. `first_line`: the line of `file` the template text starts on (for a
    template held in a TOML string); without it the template is the whole file."""
    line = template_line(exc)
    if line is not None and first_line is not None:
        line = first_line + line - 1
    elif line is None:
        line = first_line
    kind = "undefined" if isinstance(exc, jinja2.UndefinedError) else "template error"
    return UserError(f"{kind}: {exc.message or exc}", file=file, line=line, field=field)


def strict_environment(**options: object) -> jinja2.Environment:
    return jinja2.Environment(undefined=jinja2.StrictUndefined, **options)  # type: ignore[arg-type]


def render_string(
    text: str,
    context: dict[str, object],
    *,
    file: Path | str | None,
    field: str | None,
    first_line: int | None = None,
    environment: jinja2.Environment | None = None,
) -> str:
    """Render a template held in a string (a TOML value, a manifest field)."""
    env = environment or strict_environment()
    try:
        return env.from_string(text).render(context)
    except jinja2.TemplateError as exc:
        raise template_error(exc, file=file, field=field, first_line=first_line) from None
