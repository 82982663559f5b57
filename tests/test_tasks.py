"""Tasks for the inference strategies (runtime/tasks.py): HumanEval answers, behaviour signatures,
docstring-example rewards and hidden-test grading, all through the sandbox; the numeric task."""

from __future__ import annotations

import pytest

from dynexport.lm_data import humaneval
from dynexport.runtime.tasks import HumanEvalTask, NumberTask, cut, examples

PROBLEMS = {p["task_id"]: p for p in humaneval()}
P0 = PROBLEMS["HumanEval/0"]  # has_close_elements, doctest examples
EQUIVALENT = ("    for i, a in enumerate(numbers):\n        for b in numbers[i + 1:]:\n"
              "            if abs(a - b) < threshold:\n                return True\n    return False\n")
WRONG = "    return False\n"


@pytest.fixture(scope="module")
def task():
    return HumanEvalTask()


def test_canonical_solutions_pass_their_examples_and_tests(task):
    for tid in ("HumanEval/0", "HumanEval/2", "HumanEval/76", "HumanEval/79"):
        p = PROBLEMS[tid]
        ans = task.extract(p, p["canonical_solution"])
        assert ans is not None and task.grade(p, ans)
        assert task.reward(p, ans) == 1.0, (tid, examples(p))


def test_examples_parser_reads_doctests_and_arrows():
    got = examples(PROBLEMS["HumanEval/0"])
    assert [e.want for e in got] == ["False", "True"]
    arrows = examples(PROBLEMS["HumanEval/76"])  # is_simple_power(1, 4) => true
    assert arrows[0].call == "is_simple_power(1, 4)" and arrows[0].want == "True"
    with_wants = sum(any(e.want for e in examples(p)) for p in PROBLEMS.values())
    assert with_wants >= 120  # of 164: the rest state their examples in prose


def test_signature_clusters_equivalent_programs(task):
    a = task.extract(P0, P0["canonical_solution"])
    b = task.extract(P0, EQUIVALENT)
    c = task.extract(P0, WRONG)
    assert task.key(P0, a) == task.key(P0, b) != task.key(P0, c)
    assert task.reward(P0, c) == 0.5 and not task.grade(P0, c)


def test_extra_inputs_refine_the_signature():
    t = HumanEvalTask(extra_inputs={"HumanEval/0": ["has_close_elements([1.0, 1.05], 0.1)"]})
    only_false = "    return len(numbers) > 5 and threshold < 0.5\n"
    a, b = t.extract(P0, P0["canonical_solution"]), t.extract(P0, only_false)
    assert t.key(P0, a)[-1] == "True" and t.key(P0, b)[-1] == "False"


def test_stop_sequences_cut_the_completion(task):
    text = EQUIVALENT + "\n\ndef helper():\n    pass\nprint('x')"
    assert cut(text, task.stop_strings) == EQUIVALENT + "\n"
    assert task.extract(P0, text).endswith(EQUIVALENT + "\n")


def test_hostile_answers_get_a_status_not_a_crash(task):
    hang = "    while True:\n        pass\n"
    slow = HumanEvalTask(limits=type(task.limits)(seconds=6.0, cpu_seconds=6))  # examples: 2 s each
    ans = slow.extract(P0, hang)
    assert slow.key(P0, ans) == ("!TimeoutError", "!TimeoutError") and slow.reward(P0, ans) == 0.0
    assert not slow.grade(P0, ans)
    crash = task.extract(P0, "    import os\n    os._exit(3)\n")
    assert task.key(P0, crash) == ("!error",) and not task.grade(P0, crash)


def test_unparsable_or_missing_entry_point_is_no_answer(task):
    assert task.extract(P0, "    return (\n") is None
    p = dict(P0, entry_point="not_there")
    assert task.extract(p, P0["canonical_solution"]) is None


def test_number_task():
    t = NumberTask()
    assert t.extract({}, "so 3 + 4 = 7, the answer is 1,250.5") == 1250.5
    assert t.extract({}, "no digits") is None
    assert t.grade({"answer": "7"}, 7.0) and t.key({}, 2.0000000001) == t.key({}, 2.0)


def test_model_written_calls_are_parsed_not_run():
    from dynexport.runtime.codet import parse_call, probe_prompt
    assert parse_call("f", "[1, 2],  3) == 4") == "f([1, 2], 3)"
    assert parse_call("f", "'a)b') is True") == "f('a)b')"  # a ')' inside a string does not end the call
    assert parse_call("f", "1, 2") is None and parse_call("f", "__import__('os').system('x')") is None
    assert parse_call("f", "x)[0]") == "f(x)"
    assert probe_prompt(P0).endswith("# check the correctness of has_close_elements\nassert has_close_elements(")
