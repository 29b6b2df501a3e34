"""The sandbox the practitioner's templates render in: Jinja's SandboxedEnvironment,
which keeps a template away from Python's internals, with limits on time, size and
nesting, so that a mistake in a template costs that template's messages and never
stops the worker.

The limits are enforced inside the render, in the worker's own thread. A subprocess
per render would cost more than the render itself (the worker renders hundreds of
messages a second), and a thread cannot be stopped from outside. So the template's
compiled code checks itself:

- Time. The code generator (`code_generator_class`) wraps the iterable of every
  `{% for %}` so that each item taken is a step; every call (a macro, `caller()`, a
  method) and every template entered (include, import, extends) is a step too. A
  step counts against STEP_LIMIT and looks at the render's deadline, so a template
  that never finishes stops at its next step. The budget of the current render
  lives in a context variable, so each thread has its own.
- Size. No single operation may build a text or list longer than SIZE_LIMIT, checked
  before it is built: repetition (`'x' * n`, `[0] * n`), `**` and `*` on integers,
  `~` and `+`, `%` and `format` widths, the str methods that pad or multiply (center,
  ljust, rjust, zfill, expandtabs, join, replace, translate) and the filters that do
  (center, indent, join, replace, wordwrap, urlize, format, batch, slice). Output
  from `{{ }}` and the text a block, macro or `{% set %}` collects are checked the
  same way, and the rendered message as it streams out against OUTPUT_LIMIT.
  Sizes of lists count through nested lists, so a list that holds itself many times
  over cannot be turned into a huge text either.
- Nesting. Once a render has begun more than a few calls and templates, each new
  one checks that the stack stays NESTING_HEADROOM frames away from Python's
  recursion limit, so a template that includes or calls itself stops with a clear
  error instead of a RecursionError deep inside Jinja. (A RecursionError that still
  happens, printing lists nested thousands deep, unwinds and is reported the same.)

What is left: one operation on values within these limits still runs to its end (a
sort of 100,000 items, a wordwrap of 100,000 characters); each takes well under the
time limit, and the next step stops the render. A template written to be slow on
purpose (comparing deeply shared structures) can still cost more; the templates
come from the clinic's own practitioner, who makes mistakes, not attacks.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from string import Formatter
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace

# Limits of one render. Every real message is far below each of them: a template
# that reaches one has a mistake, and the render stops saying which limit, where.
TIME_LIMIT_SECONDS = 2.0
OUTPUT_LIMIT = 100_000  # characters of a rendered message (LINE allows 5,000)
SIZE_LIMIT = 100_000  # characters or items of any text or list a template makes
RANGE_LIMIT = 10_000  # numbers in one range() (Jinja's sandbox allows 100,000)
STEP_LIMIT = 100_000  # loop iterations and calls in one render
NUMBER_BITS_LIMIT = 4_096  # bits of an integer a template computes (~1,200 digits)
NESTING_HEADROOM = 300  # frames of Python's recursion limit a render leaves unused


class LimitExceeded(Exception):
    """A render went over a limit. The message says which; it never holds a value.

    Not a ValueError or TypeError on purpose: Jinja's filters swallow those (`int`
    falls back to its default), and a limit must stop the render."""


class DeadlinePassed(LimitExceeded):
    """The render took longer than its time limit (the one limit that costs time to
    find: the others stop a template as soon as it reaches them)."""


@dataclass
class _Budget:
    seconds: float
    deadline: float
    steps_left: int = STEP_LIMIT
    entered: int = 0  # calls and templates begun

    def step(self) -> None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise LimitExceeded(
                f"more than {STEP_LIMIT:,} loop iterations and calls: a loop that never ends?"
            )
        if time.monotonic() > self.deadline:
            raise DeadlinePassed(f"rendering took longer than {self.seconds:g} s")


_budget: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


class RenderBudget:
    """`with RenderBudget(seconds):` the steps of the templates rendered inside count
    against one budget and deadline (a class: cheaper than @contextmanager)."""

    def __init__(self, seconds: float) -> None:
        self._budget = _Budget(seconds, time.monotonic() + seconds)

    def __enter__(self) -> None:
        self._token = _budget.set(self._budget)

    def __exit__(self, *exc_info: object) -> None:
        _budget.reset(self._token)


def _entered() -> None:
    """A call, or another template, begins: a step, and a look at how deep the stack
    has grown. Only past the first few of a render: most never nest, and the look
    costs a microsecond."""
    budget = _budget.get()
    if budget is None:
        return  # rendered outside a RenderBudget: nothing to count against
    budget.step()
    budget.entered += 1
    if budget.entered <= 32:
        return
    limit = sys.getrecursionlimit()
    try:
        sys._getframe(max(limit - NESTING_HEADROOM, limit // 2))
    except ValueError:
        return  # the stack is not that deep
    raise LimitExceeded(
        "includes or macro calls nested too deep: does a template include or call itself?"
    )


def streamed(events: Iterator[str], part: str) -> str:
    """The text of a template's output, stopped as soon as it passes OUTPUT_LIMIT."""
    chunks = []
    length = 0
    for chunk in events:
        length += len(chunk)
        if length > OUTPUT_LIMIT:
            error = LimitExceeded(f"the {part} is longer than {OUTPUT_LIMIT:,} characters")
            if isinstance(events, Generator):
                # Raised where the template wrote it, so the error names that line.
                events.throw(error)
            raise error
        chunks.append(chunk)
    return "".join(chunks)


def limited_range(*args: int) -> range:
    try:
        numbers = range(*args)
        too_long = len(numbers) > RANGE_LIMIT
    except OverflowError:
        too_long = True  # longer than Python can count
    if too_long:
        raise LimitExceeded(f"range() of more than {RANGE_LIMIT:,} numbers")
    return numbers


# --- sizes ---------------------------------------------------------------------------


_SCALARS = frozenset({int, float, bool, type(None)})
# What size_of makes of a value, by its class; found once per class with
# issubclass, then looked up (a render meets a handful of classes, many times).
_OTHER, _TEXT, _ITEMS, _MAPPING, _NAMESPACE = range(1, 6)
_KIND_OF: dict[type, int] = {}


def _kind_of(cls: type) -> int:
    kind = _KIND_OF.get(cls)
    if kind is None:
        if issubclass(cls, str | bytes | bytearray):
            kind = _TEXT
        elif issubclass(cls, dict):
            kind = _MAPPING
        elif issubclass(cls, list | tuple | set | frozenset):
            kind = _ITEMS
        elif issubclass(cls, Namespace):
            kind = _NAMESPACE
        else:
            kind = _OTHER
        _KIND_OF[cls] = kind
    return kind


def size_of(value: object) -> int:
    """About how long `value` is as text: characters of a text; one for a number or
    an object; for a list or mapping, its items counted through, a repeated or shared
    item each time again (as printing it would). Stops once past SIZE_LIMIT, so it
    costs little even for a list that holds itself."""
    if type(value) is str:
        return len(value)
    if type(value) in _SCALARS:
        return 1
    total = 0
    pending = [value]
    while pending and total <= SIZE_LIMIT:
        item: Any = pending.pop()
        kind = _KIND_OF.get(type(item)) or _kind_of(type(item))
        if kind == _TEXT:
            total += len(item) or 1
        elif kind == _OTHER:
            total += 1
        else:
            if kind == _NAMESPACE:
                item, kind = item._Namespace__attrs, _MAPPING
            if len(item) > SIZE_LIMIT - total:
                return SIZE_LIMIT + 1  # its items alone are too many
            total += 0 if item else 1  # a list is as long as its items
            pending.extend(item)
            if kind == _MAPPING:
                pending.extend(item.values())
    return total


def _too_big(what: str) -> LimitExceeded:
    return LimitExceeded(f"{what} would be longer than {SIZE_LIMIT:,} characters or items")


def _check_built(value: object, what: str) -> None:
    """A value just made: no text or list longer than SIZE_LIMIT (its own length;
    its items were checked when they were made)."""
    if isinstance(value, str | bytes | list | tuple | dict | set) and len(value) > SIZE_LIMIT:
        raise _too_big(what)


def _ints(values: Iterable[object]) -> int:
    """Integers among arguments, as the lengths they would ask for (a width, a count)."""
    total = 0
    for value in values:
        if isinstance(value, int):
            total += abs(value)
    return total


def _number(digits: str) -> int:
    return int(digits) if len(digits) < 10 else SIZE_LIMIT + 1


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _percent_widths(template: object, args: object) -> int:
    """The widths and precisions that `template % args` pads to."""
    if not isinstance(template, str | bytes):
        return 0
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    total = 0
    for match in _PERCENT_SPEC.finditer(text):
        for width in match.groups():
            if width == "*":  # taken from the arguments
                values = args.values() if isinstance(args, Mapping) else args
                total += _ints(values if isinstance(values, Iterable) else [values])
            elif width:
                total += _number(width)
    return total


def _format_widths(template: str, args: Iterable[object]) -> int:
    """The widths and precisions that `template.format(...)` pads to."""
    total = 0
    try:
        fields = list(Formatter().parse(template))
    except ValueError:
        return 0  # the call itself reports the broken format
    for _, _, spec, _ in fields:
        if spec:
            total += sum(_number(d) for d in re.findall(r"\d+", spec))
            if "{" in spec:  # a nested field: the width comes from the arguments
                total += _ints(args)
    return total


def _text_method_size(text: str | bytes, method: str, args: tuple[Any, ...]) -> int:
    """What a method of a text may add beyond its arguments' own size."""
    try:
        if method == "join" and args and isinstance(args[0], Sized):
            return len(text) * len(args[0])
        if method == "replace" and len(args) >= 2:
            old, new = args[0], args[1]
            found = text.count(old) if old else len(text) + 1
            return found * len(new)
        if method == "translate" and args and isinstance(args[0], Mapping):
            longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
            return len(text) * longest
        if method == "expandtabs":
            tab = "\t" if isinstance(text, str) else b"\t"
            return text.count(tab) * _ints(args)  # type: ignore[arg-type]
        if method in ("format", "format_map") and isinstance(text, str):
            return _format_widths(text, args)
    except TypeError:
        return 0  # wrong argument types: the call itself fails with its own error
    return 0


# --- filters ---------------------------------------------------------------------------


def _positional(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


# Filters that pick, count, order or group items without making text of them: only
# their result's own length and the numbers they are given (a batch's size) matter.
_ITEM_FILTERS = frozenset(
    {
        "abs", "attr", "batch", "count", "d", "default", "dictsort", "first", "float",
        "groupby", "int", "items", "last", "length", "list", "map", "max", "min",
        "random", "reject", "rejectattr", "reverse", "round", "select", "selectattr",
        "slice", "sort", "unique",
    }
)  # fmt: skip
# Filters whose result grows with their value as text, beyond its own size.
_TEXT_FILTERS = frozenset({"replace", "indent", "wordwrap", "urlize", "format"})


def _filter_size(name: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """What a filter may add beyond the size of its value and arguments."""
    if name == "join":
        separator = _positional(args, kwargs, 0, "d") or ""
        return len(str(separator)) * len(value) if isinstance(value, Sized) else 0
    if name not in _TEXT_FILTERS:
        return 0
    # These work on the value as text, whatever it is (its size is checked already).
    text = str(value)
    if name == "replace":
        old = str(_positional(args, kwargs, 0, "old"))
        new = str(_positional(args, kwargs, 1, "new"))
        return (text.count(old) if old else len(text) + 1) * len(new)
    if name == "indent":
        width = _positional(args, kwargs, 0, "width")
        per_line = width if isinstance(width, int) else len(str(width or ""))
        return per_line * (text.count("\n") + 1)
    if name == "wordwrap":
        width = _positional(args, kwargs, 0, "width")
        wrap = _positional(args, kwargs, 2, "wrapstring")
        lines = len(text) // max(width if isinstance(width, int) else 79, 1) + 1
        return len(str(wrap or "\n")) * lines
    if name == "urlize":
        added = sum(len(v) for v in (*args, *kwargs.values()) if isinstance(v, str))
        return added * (len(text) // 4 + 1)
    if name == "format":
        return _percent_widths(text, kwargs or args)
    return 0


def _limited_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Filters marked pass_context / pass_eval_context / pass_environment get that
    # first; the filtered value follows.
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    items_only = name in _ITEM_FILTERS
    consumes = name in ("join", "sum")
    what = f"the {name} filter's result"

    @functools.wraps(func)
    def limited(*args: Any, **kwargs: Any) -> Any:
        value = args[skip]
        if consumes and not isinstance(value, list | tuple | str):
            # An iterator (from map or select): its items are counted before they
            # are joined or added.
            value = list(value)
            args = (*args[:skip], value, *args[skip + 1 :])
        if len(args) == skip + 1 and not kwargs:  # no arguments, as most are used
            size = 0 if items_only else size_of(value)
        elif items_only:
            # The value exists already and none of it becomes text: only the
            # numbers given (a batch's size) could ask for much.
            size = _ints(args[skip + 1 :]) + _ints(kwargs.values())
        else:
            rest = args[skip + 1 :]
            given = (value, *rest, *kwargs.values())
            size = size_of(given) + _ints(given[1:]) + _filter_size(name, value, rest, kwargs)
        if size > SIZE_LIMIT:
            raise _too_big(what)
        result = func(*args, **kwargs)
        _check_built(result, what)
        return result

    return limited


# --- the environment ---------------------------------------------------------------


class _LimitedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with the checks of a limited render written in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: set[int] = set()

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # Jinja's own visit_For writes the iterable with visit(); mark it so that
        # visit() below wraps it, whichever way (filtered, recursive) the loop is built.
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_iterables:
            return super().visit(node, *args, **kwargs)
        self.write("environment.counted(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # As Jinja's, with the parts of `a ~ b` checked before they are joined.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"{join}(environment.joinable((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write(")))")


class LimitedEnvironment(SandboxedEnvironment):
    """A SandboxedEnvironment whose templates stop at the limits above."""

    code_generator_class = _LimitedCodeGenerator
    # Intercepted, these also stay out of Jinja's constant folding, which would
    # otherwise compute `10 ** 100000000` while compiling the template.
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_checked_output, **options)
        self.globals["range"] = limited_range
        self.filters = {name: _limited_filter(name, f) for name, f in self.filters.items()}

    # Called by the compiled templates ------------------------------------------------

    def counted(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """A loop's items, each a step."""
        budget = _budget.get()
        if budget is None:
            yield from iterable
            return
        for item in iterable:
            budget.step()
            yield item

    def joinable(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        if size_of(parts) > SIZE_LIMIT:
            raise _too_big("joining with ~")
        return parts

    def concat(self, parts: Iterable[str]) -> str:
        # What a block, a macro or {% set %}…{% endset %} collected, joined.
        if not isinstance(parts, list):
            parts = list(parts)
        if sum(map(len, parts)) > SIZE_LIMIT:
            raise _too_big("the text of a block, macro or set")
        return "".join(parts)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _entered()
        # The sandbox hands out str.format wrapped; the method is underneath.
        method = getattr(obj, "__wrapped__", obj)
        receiver = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        what = f"{name}()"
        if isinstance(receiver, str | bytes | int):
            if name == "join" and args and not isinstance(args[0], Sized):
                args = (list(args[0]), *args[1:])
            given = (*args, *kwargs.values())
            size = size_of(given) + _ints(given)
            if not isinstance(receiver, int):
                size += len(receiver) + _text_method_size(receiver, name, args)
            if size > SIZE_LIMIT:
                raise _too_big(what)
        elif isinstance(receiver, list | dict | set):
            # extend(), update(), append() in a loop: the container's own length.
            added = sum(len(a) if isinstance(a, Sized) else 1 for a in (*args, *kwargs.values()))
            if len(receiver) + added > SIZE_LIMIT:
                raise _too_big(what)
        result = super().call(context, obj, *args, **kwargs)
        _check_built(result, what)
        return result

    # Entering another template ---------------------------------------------------------

    def get_template(self, *args: Any, **kwargs: Any) -> jinja2.Template:
        _entered()
        return super().get_template(*args, **kwargs)

    def select_template(self, *args: Any, **kwargs: Any) -> jinja2.Template:
        _entered()
        return super().select_template(*args, **kwargs)


def _checked_output(value: Any) -> Any:
    """Every `{{ }}`'s value, before it becomes text."""
    # Most values are short texts or numbers: checked here without another call.
    kind = type(value)
    if kind is str:
        too_big = len(value) > SIZE_LIMIT
    else:
        too_big = kind not in _SCALARS and size_of(value) > SIZE_LIMIT
    if too_big:
        raise _too_big("this value as text")
    return value


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if operator == "*":
            bits = left.bit_length() + right.bit_length()
        elif operator == "**" and right > 0 and abs(left) > 1:
            bits = right * left.bit_length()
        else:
            return
        if bits > NUMBER_BITS_LIMIT:
            raise LimitExceeded(f"a number of more than {NUMBER_BITS_LIMIT:,} bits")
        return
    if operator == "*" and (isinstance(left, int) or isinstance(right, int)):
        times, sequence = (left, right) if isinstance(left, int) else (right, left)
        size = len(sequence) * times if isinstance(sequence, Sized) else 0
    elif operator == "+" and isinstance(left, Sized) and isinstance(right, Sized):
        size = len(left) + len(right)
    elif operator == "%" and isinstance(left, str | bytes):
        size = len(left) + size_of(right) + _percent_widths(left, right)
    else:
        return
    if size > SIZE_LIMIT:
        raise _too_big(f"the result of {operator}")
