"""Model chat templates (Jinja from the model file: data, not trusted code) rendered under limits.

transformers renders a tokenizer's `chat_template` in jinja2's immutable sandbox, which blocks
escapes but not cost: nested `range(100000)` loops or `'x' * 3000000000` run until memory runs
out. Here every render is bounded:

- `range()` gives at most `MAX_RANGE` numbers; `*`, `+`, `**`, `%`, `~`, filters and method
  calls may not build a string or list over `MAX_ITEMS` (nor take an integer argument over
  it, e.g. a width), format strings may not ask for such widths;
- one render runs at most `MAX_LOOP_STEPS` loop iterations and `RENDER_S` seconds and writes
  at most `MAX_OUTPUT_CHARS` characters;
- going past a limit raises `TemplateLimitError`, naming the template and the limit.

`install()` (called by `kgc.modeling.loading.load_tokenizer`) points transformers' template
compiler — the one step every `apply_chat_template` goes through — at `BoundedSandbox`, so
training, extraction and serving render under these limits with transformers' own template
globals (`raise_exception`, `tojson`, `namespace`, …). `check_template` renders a template once
on a sample conversation in a child process with a memory cap and a time limit: `kgc model
prepare` refuses a model whose template fails it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from kgc.errors import KgcError

MAX_RANGE = 10_000
MAX_ITEMS = 1_000_000  # characters of a string / items of a list a template builds
MAX_OUTPUT_CHARS = 4_000_000  # a render's output (a 128k-token prompt is ≈ 500k characters)
MAX_LOOP_STEPS = 1_000_000  # `for` iterations in one render, all loops together
RENDER_S = 5.0  # one render (a normal one takes milliseconds)
CHECK_MEMORY_BYTES = 2 << 30  # the child process of `check_template`
FIX = (
    "set model.template to a kgc template (e.g. chatml, alpaca) to lay prompts out without it, "
    "or fix the template"
)
SAMPLE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Extract the people: Ada went to Paris."},
    {"role": "assistant", "content": '{"person": ["Ada"]}'},
    {"role": "user", "content": "Extract the places: Ada went to Paris."},
]


class TemplateLimitError(KgcError):
    """A chat template went past a rendering limit."""


class _Budget:
    def __init__(self, name: str):
        self.name = name
        self.deadline = time.monotonic() + RENDER_S
        self.steps = 0
        self.out = 0


_STATE = threading.local()


def _budget() -> _Budget:
    b = getattr(_STATE, "budget", None)
    return b if b is not None else _Budget("chat template")


def _refuse(what: str) -> TemplateLimitError:
    return TemplateLimitError(f"{_budget().name} {what}; {FIX}")


def _tick() -> None:
    if time.monotonic() > _budget().deadline:
        raise _refuse(f"rendered for longer than {RENDER_S} s (the limit of one render)")


def _check_size(value, what: str):
    if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > MAX_ITEMS:
        raise _refuse(f"built {what} of {len(value):,} items (limit {MAX_ITEMS:,})")
    return value


def _check_args(args, kwargs, what: str) -> None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_ITEMS:
            raise _refuse(
                f"passed {a:,} to {what} (integer arguments are limited to {MAX_ITEMS:,})"
            )


_WIDE = re.compile(r"\d{7,}|%[-#0 +]*\*|\{[^{}]*\{")  # widths ≥ 1e6, '*' or nested-field widths


def _check_format(fmt) -> None:
    if isinstance(fmt, str) and _WIDE.search(fmt):
        raise _refuse(f"used a format string with a width over {MAX_ITEMS:,} or a computed width")


def _bounded_range(*args):
    _check_args(args, {}, "range()")
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise _refuse(f"asked for range() of {len(r):,} numbers (limit {MAX_RANGE:,})")
    return r


def _bounded_filter(name: str, f):
    @functools.wraps(f)  # keeps jinja's pass_context/pass_eval_context markers
    def run(*args, **kwargs):
        _tick()
        _check_args(args, kwargs, f"the {name} filter")
        if name == "format" and args:
            _check_format(next((a for a in args if isinstance(a, str)), None))
        if name == "join" and len(args) > 1 and hasattr(args[1], "__len__"):
            sep = kwargs.get("d", args[2] if len(args) > 2 else "")
            if len(args[1]) * (len(str(sep)) + 1) > MAX_ITEMS:
                raise _refuse(
                    f"joined {len(args[1]):,} items with a {len(str(sep)):,}-character separator"
                )
        return _check_size(f(*args, **kwargs), f"a value with the {name} filter")

    return run


def _environment_class():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def call_binop(self, context, operator, left, right):
            _tick()
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    seq_ok = isinstance(seq, (str, list, tuple)) and isinstance(n, int)
                    if seq_ok and len(seq) * n > MAX_ITEMS:
                        raise _refuse(
                            f"repeated a {len(seq):,}-item value {n:,} times with '*' "
                            f"(limit {MAX_ITEMS:,} items)"
                        )
                ints = isinstance(left, int) and isinstance(right, int)
                if ints and left.bit_length() + right.bit_length() > 4096:
                    raise _refuse("multiplied integers past 4096 bits")
            elif operator == "**" and isinstance(left, int) and isinstance(right, int):
                if right > 0 and left.bit_length() * right > 4096:
                    raise _refuse(f"raised an integer to the power {right:,} (past 4096 bits)")
            elif operator == "+" and all(isinstance(x, (str, list, tuple)) for x in (left, right)):
                if len(left) + len(right) > MAX_ITEMS:
                    raise _refuse(f"built a value over {MAX_ITEMS:,} items with '+'")
            elif operator == "%":
                _check_format(left)
            return super().call_binop(context, operator, left, right)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja's signature
            _tick()
            _check_args(args, kwargs, getattr(__obj, "__name__", "a call"))
            out = super().call(__context, __obj, *args, **kwargs)
            return _check_size(out, f"a value with {getattr(__obj, '__name__', 'a call')}()")

        def wrap_str_format(self, value):
            fmt = super().wrap_str_format(value)
            if fmt is not None:
                _check_format(value.__self__)
            return fmt

        def getattr(self, obj, attribute):
            _tick()
            return super().getattr(obj, attribute)

        def getitem(self, obj, argument):
            _tick()
            return super().getitem(obj, argument)

        # reached through the template rewrite in `_compile` (environment.kgc_*), never by name
        def kgc_loop(self, iterable):
            b = _budget()
            for item in iterable:
                b.steps += 1
                if b.steps > MAX_LOOP_STEPS:
                    raise _refuse(f"ran more than {MAX_LOOP_STEPS:,} loop iterations in one render")
                if not b.steps % 1024:
                    _tick()
                yield item

        def kgc_concat(self, *parts):
            _tick()
            return _check_size("".join(map(str, parts)), "a string with '~'")

    return BoundedSandbox


def _template_class():
    from jinja2 import Template

    class BoundedTemplate(Template):
        kgc_name = "the chat template"

        def generate(self, *args, **kwargs):
            budget = _Budget(self.kgc_name)
            outer = getattr(_STATE, "budget", None)
            _STATE.budget = budget
            try:
                for chunk in super().generate(*args, **kwargs):
                    budget.out += len(chunk)
                    if budget.out > MAX_OUTPUT_CHARS:
                        raise _refuse(f"wrote more than {MAX_OUTPUT_CHARS:,} characters")
                    yield chunk
            finally:
                _STATE.budget = outer

        def render(self, *args, **kwargs):
            return "".join(self.generate(*args, **kwargs))

    return BoundedTemplate


@functools.lru_cache(maxsize=1)
def environment():
    """The bounded sandbox with transformers' chat-template settings, globals and filters."""
    from transformers.utils import chat_template_utils as ctu

    base = ctu._cached_compile_jinja_template("").environment  # transformers' own settings
    env = _environment_class()(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[type(e) for e in base.extensions.values()],
    )
    env.template_class = _template_class()
    env.filters.update({k: _bounded_filter(k, f) for k, f in base.filters.items()})
    env.globals.update({k: v for k, v in base.globals.items() if k not in ("range", "lipsum")})
    env.globals["range"] = _bounded_range
    env.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs; no chat template needs it
    return env


@functools.lru_cache(maxsize=64)
def compile_template(source: str):
    """`source` as a bounded template: every `for` loop and `~` go through the budget."""
    from jinja2 import nodes
    from jinja2.visitor import NodeTransformer

    class Bound(NodeTransformer):
        def visit_For(self, node):  # noqa: N802 - jinja's visitor naming
            node = self.generic_visit(node)
            node.iter = nodes.Call(
                nodes.EnvironmentAttribute("kgc_loop"), [node.iter], [], None, None
            )
            return node

        def visit_Concat(self, node):  # noqa: N802
            node = self.generic_visit(node)
            return nodes.Call(nodes.EnvironmentAttribute("kgc_concat"), node.nodes, [], None, None)

    env = environment()
    template = env.from_string(Bound().visit(env.parse(source)))
    sha = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    template.kgc_name = f"the model's chat template (sha256 {sha}…)"
    return template


def install() -> None:
    """Every `apply_chat_template` of this process compiles its template with
    `compile_template` (transformers 5.24: `chat_template_utils._compile_jinja_template`)."""
    from transformers.utils import chat_template_utils as ctu

    if getattr(ctu._compile_jinja_template, "kgc_bounded", False):
        return

    def bounded(chat_template):
        return compile_template(chat_template)

    bounded.kgc_bounded = True  # type: ignore[attr-defined]
    ctu._compile_jinja_template = bounded


def render(source: str, messages: list[dict], name: str | None = None, **kwargs) -> str:
    """`source` rendered on `messages` under the limits (as apply_chat_template would)."""
    template = compile_template(source)
    if name:
        template.kgc_name = name
    return template.render(messages=messages, add_generation_prompt=True, **kwargs)


def check_template(source: str, where: str, special_tokens: dict | None = None) -> None:
    """Render `source` once on a sample conversation in a child process (memory capped at
    CHECK_MEMORY_BYTES, stopped after RENDER_S plus start-up); a clear error if it fails."""
    name = f"the chat template of {where}"
    job = json.dumps({"source": source, "name": name, "special": special_tokens or {}})
    limit_s = RENDER_S + 30  # importing transformers' template module in the child
    root = str(Path(__file__).resolve().parents[2])  # the child imports this kgc
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    try:
        r = subprocess.run(
            [sys.executable, "-c", "from kgc.modeling.chat_render import _child; _child()"],
            input=job,
            capture_output=True,
            text=True,
            timeout=limit_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise TemplateLimitError(
            f"{name} did not finish one render of a sample conversation in {limit_s:.0f} s; "
            f"the model is refused: {FIX}"
        ) from None
    if r.returncode == 0:
        return
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    last = lines[-1][:600] if lines else f"exit status {r.returncode}"
    if last.startswith(name):  # a limit of the bounded renderer, named by it
        raise TemplateLimitError(f"{last} (a sample conversation); the model is refused")
    if r.returncode < 0 or "MemoryError" in last:
        last = f"stopped past its memory limit of {CHECK_MEMORY_BYTES >> 20} MB ({last})"
    raise TemplateLimitError(
        f"{name} cannot render a sample conversation: {last}; the model is refused: {FIX}"
    )


def _child() -> None:  # pragma: no cover - the child process of check_template
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (CHECK_MEMORY_BYTES, CHECK_MEMORY_BYTES))
    job = json.loads(sys.stdin.read())
    try:
        render(job["source"], SAMPLE, name=job["name"], **job["special"])
    except TemplateLimitError as e:
        print(str(e), file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - any failure of the template is the answer
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
