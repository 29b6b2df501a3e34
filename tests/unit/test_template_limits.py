"""A mistake in a template costs that template's messages, never the worker: whatever
goes wrong comes out of `Renderer.render` as a TemplateError that names the file and
line, arrives within the time limit, and never quotes the patient's values."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from scheduler.messages.sandbox import TIME_LIMIT_SECONDS
from scheduler.messages.templates import Renderer, TemplateError

LINE = "cadence_nudge/line.j2"
SECRET = "秘密 太郎"


@pytest.fixture
def messages(tmp_path: Path) -> Path:
    """A messages folder with one LINE template and the tip it includes."""
    folder = tmp_path / "messages"
    (folder / "cadence_nudge").mkdir(parents=True)
    (folder / "_tip.j2").write_text("{{ tip }}\n", encoding="utf-8")
    _edit(folder / LINE, "{{ patient_name }}、こんにちは。\n{% include '_tip.j2' %}\n")
    return folder


def _edit(path: Path, text: str) -> None:
    """Save as an editor would; the modification time moves on, so Jinja notices."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 10**9, before + 10**9))


def _context() -> dict[str, object]:
    return {
        "patient_name": f"{SECRET}様",
        "tip": "肩を回しましょう。",
        "clinic": {"name": "たより整体院", "phone": "03-0000-0000"},
    }


OVER_A_LIMIT = [
    pytest.param(
        LINE,
        "{{ patient_name }}\n{% for i in range(10**9) %}.{% endfor %}\n",
        "cadence_nudge/line.j2:2: range() of more than 10,000 numbers",
        id="range-of-a-billion",
    ),
    pytest.param(
        "_tip.j2",
        "{{ tip }}\n{% include '_tip.j2' %}\n",
        "_tip.j2:2: includes or macro calls nested too deep",
        id="tip-including-itself",
    ),
    pytest.param(
        LINE,
        "{% macro again() %}{{ again() }}{% endmacro %}\n{{ again() }}\n",
        "cadence_nudge/line.j2:1: includes or macro calls nested too deep",
        id="macro-calling-itself",
    ),
    pytest.param(
        LINE,
        "{{ patient_name }}\n"
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n",
        "cadence_nudge/line.j2:2: range() of more than 10,000 numbers",
        id="nested-loops-of-100000",
    ),
    pytest.param(
        LINE,
        "{{ patient_name }}\n"
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}\n",
        "cadence_nudge/line.j2:2: more than 100,000 loop iterations and calls",
        id="nested-loops-of-10000",
    ),
    pytest.param(
        LINE,
        "{{ patient_name }}\n{{ 'x'.center(10**9) }}\n",
        "cadence_nudge/line.j2:2: center() would be longer than 100,000 characters",
        id="center-method",
    ),
    pytest.param(
        LINE,
        "{{ patient_name }}\n{{ 'x' | center(10**9) }}\n",
        "cadence_nudge/line.j2:2: the center filter's result would be longer than 100,000",
        id="center-filter",
    ),
    pytest.param(
        LINE,
        "{{ patient_name }}\n{{ [0] * 10**8 }}\n",
        "cadence_nudge/line.j2:2: the result of * would be longer than 100,000",
        id="list-repeated",
    ),
    pytest.param(
        LINE,
        "{{ patient_name }}\n{{ 10 ** 100000000 }}\n",
        "cadence_nudge/line.j2:2: a number of more than 4,096 bits",
        id="huge-power",
    ),
    pytest.param(
        LINE,
        "{% set ns = namespace(text='x') %}\n"
        "{% for i in range(40) %}{% set ns.text = ns.text ~ ns.text %}{% endfor %}\n",
        "cadence_nudge/line.j2:2: joining with ~ would be longer than 100,000",
        id="text-doubled-in-a-loop",
    ),
    pytest.param(
        LINE,
        "{% set numbers = [0] %}\n"
        "{% for i in range(60) %}{% set _ = numbers.extend(numbers) %}{% endfor %}\n",
        "cadence_nudge/line.j2:2: extend() would be longer than 100,000",
        id="list-doubled-in-a-loop",
    ),
    pytest.param(
        LINE,
        "{{ patient_name }}\n{{ '%999999999d' % 1 }}\n",
        "cadence_nudge/line.j2:2: the result of % would be longer than 100,000",
        id="percent-width",
    ),
    pytest.param(
        LINE,
        "{{ patient_name }}\n{{ '{:>999999999}'.format(1) }}\n",
        "cadence_nudge/line.j2:2: format() would be longer than 100,000",
        id="format-width",
    ),
    pytest.param(
        LINE,
        "{% set ns = namespace(twice=['x' * 1000]) %}\n"
        "{% for i in range(30) %}{% set ns.twice = [ns.twice, ns.twice] %}{% endfor %}\n"
        "{{ ns.twice }}\n",
        "cadence_nudge/line.j2:3: this value as text would be longer than 100,000",
        id="list-holding-itself-many-times-printed",
    ),
    pytest.param(
        LINE,
        "{{ patient_name }}\n{% for i in range(2000) %}{{ 'x' * 100 }}{% endfor %}\n",
        "cadence_nudge/line.j2:2: the message is longer than 100,000 characters",
        id="message-too-long",
    ),
    pytest.param(
        LINE,
        "{% set ns = namespace(deep=[]) %}\n"
        "{% for i in range(5000) %}{% set ns.deep = [ns.deep] %}{% endfor %}\n"
        "{{ ns.deep }}\n",
        "cadence_nudge/line.j2:3: nested too deep",
        id="lists-nested-deeper-than-python-prints",
    ),
]


@pytest.mark.parametrize(("file", "source", "problem"), OVER_A_LIMIT)
def test_a_template_over_a_limit_fails_in_time_naming_file_and_line(
    messages: Path, file: str, source: str, problem: str
) -> None:
    _edit(messages / file, source)
    started = time.monotonic()
    with pytest.raises(TemplateError) as failed:
        Renderer(messages).render(LINE, _context())
    assert time.monotonic() - started < TIME_LIMIT_SECONDS
    assert f"{messages}/{problem}" in str(failed.value)


QUOTING_A_VALUE = [
    pytest.param(
        "{{ clinic[patient_name] }}",
        "'dict object' has no attribute '…' (a value from the message: not shown)",
        id="unknown-key",
    ),
    pytest.param(
        "{{ ['a', 'b'].index(patient_name) }}",
        "a value this operation cannot use (ValueError)",
        id="not-in-list",
    ),
    pytest.param(
        "{{ {}.pop(patient_name) }}",
        "no item with that key (KeyError)",
        id="key-error",
    ),
    pytest.param(
        "{% include patient_name %}",
        "template not found (its name comes from the message's values; not shown)",
        id="include-by-name",
    ),
    pytest.param(
        "{{ patient_name.encode(patient_name) }}",
        "nothing found by that name (LookupError)",
        id="unknown-encoding",
    ),
]


@pytest.mark.parametrize(("line", "problem"), QUOTING_A_VALUE)
def test_an_error_says_what_and_where_without_the_patients_name(
    messages: Path, line: str, problem: str
) -> None:
    _edit(messages / LINE, f"{{{{ clinic.name }}}}\n{line}\n")
    with pytest.raises(TemplateError) as failed:
        Renderer(messages).render(LINE, _context())
    assert str(failed.value) == f"{messages / LINE}:2: {problem}"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{{ clinic.fax }}", "'dict object' has no attribute 'fax'"),
        ("{{ shoe_size }}", "'shoe_size' is undefined"),
        ("{% include '_nowhere.j2' %}", "template not found: _nowhere.j2"),
        ("{{ 1 // 0 }}", "division by zero (ZeroDivisionError)"),
        ("{{ clinic.name + 1 }}", "a value of the wrong type here"),
    ],
)
def test_an_error_shows_what_the_template_itself_wrote(
    messages: Path, line: str, problem: str
) -> None:
    _edit(messages / LINE, f"{{{{ clinic.name }}}}\n{line}\n")
    with pytest.raises(TemplateError, match=re.escape(f"line.j2:2: {problem}")):
        Renderer(messages).render(LINE, _context())


def test_a_render_stops_at_its_time_limit(messages: Path) -> None:
    _edit(messages / LINE, "{{ patient_name }}\n{% for i in range(1000) %}.{% endfor %}\n")
    with pytest.raises(TemplateError, match=r"line\.j2:2: rendering took longer than 0 s"):
        Renderer(messages, time_limit=0.0).render(LINE, _context())


def test_a_version_over_the_time_limit_is_not_rendered_again_until_edited(
    messages: Path,
) -> None:
    source = "{{ patient_name }}\n{% for i in range(1000) %}.{% endfor %}\n"
    _edit(messages / LINE, source)
    renderer = Renderer(messages, time_limit=0.0)
    with pytest.raises(TemplateError):
        renderer.render(LINE, _context())
    renderer.time_limit = TIME_LIMIT_SECONDS  # time enough now, but not tried again
    with pytest.raises(TemplateError, match=r"line\.j2:2: rendering took longer than 0 s"):
        renderer.render(LINE, _context())
    _edit(messages / LINE, source)
    assert renderer.render(LINE, _context()).text.endswith("." * 1000)


def test_a_template_within_the_limits_renders_as_jinja_would(messages: Path) -> None:
    _edit(
        messages / LINE,
        "{% macro twice(w) %}{{ w * 2 }}{% endmacro %}\n"
        "{% for n in range(1, 6) if n is odd %}{{ n }}{{ '/' if not loop.last }}{% endfor %};\n"
        "{% for n in [3, 2, 1] %}{{ loop.length - loop.index0 }}{% endfor %};\n"
        "{% set joined %}{% for w in ['a', 'b'] %}{{ twice(w) }}{% endfor %}{% endset %}"
        "{{ joined }}\n"
        "{{ '%03d' % 7 }} {{ '{:>4}'.format('x') }} {{ 'ab' | center(6) | replace(' ', '_') }}\n"
        "{{ [1, 2] + [3] }} {{ 2 ** 10 }} {{ patient_name ~ '!' }}\n",
    )
    text = Renderer(messages).render(LINE, _context()).text
    assert text.splitlines() == [
        "1/3/5;",
        "321;",
        "aabb",
        "007    x __ab__",
        f"[1, 2, 3] 1024 {SECRET}様!",
    ]


def test_a_template_nested_too_deep_leaves_the_renderer_working(messages: Path) -> None:
    renderer = Renderer(messages)
    limit = sys.getrecursionlimit()
    _edit(messages / "_tip.j2", "{{ tip }}\n{% include '_tip.j2' %}\n")
    with pytest.raises(TemplateError):
        renderer.render(LINE, _context())
    _edit(messages / "_tip.j2", "{{ tip }}\n")
    assert renderer.render(LINE, _context()).text.endswith("肩を回しましょう。")
    assert sys.getrecursionlimit() == limit


def test_an_edit_over_a_limit_keeps_the_last_good_version(messages: Path) -> None:
    renderer = Renderer(messages)
    good = renderer.render(LINE, _context())
    _edit(messages / LINE, "{{ patient_name }}\n{{ 'x'.center(10**9) }}\n")
    assert renderer.render(LINE, _context()) == good
    assert "line.j2:2: center() would be longer" in renderer.problems[LINE]
