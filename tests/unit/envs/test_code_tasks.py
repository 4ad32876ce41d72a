"""Code tasks: generation, the host reference vs an independent solution in the sandbox, partial credit, hacks."""

from __future__ import annotations

import asyncio

import pytest

from forge.data import score_response
from forge.envs.code_tasks import (
    FAMILIES,
    CodeSandboxReward,
    CodeTask,
    CodeTaskConfig,
    CodeTaskDataset,
    build_test_program,
    extract_code,
    grade_code,
    make_code_task,
    passed_tests,
)
from forge.envs.sandbox import Sandbox, SandboxConfig

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(SandboxConfig(timeout_s=5.0, max_concurrency=4))


def _fenced(code: str) -> str:
    return f"Here you go:\n```python\n{code}```\nDone."


def test_generation_is_deterministic_and_distinct():
    a = CodeTaskDataset(CodeTaskConfig(size=30, seed=3))
    b = CodeTaskDataset(CodeTaskConfig(size=30, seed=3))
    c = CodeTaskDataset(CodeTaskConfig(size=30, seed=4))
    assert [t.prompt for t in a.tasks] == [t.prompt for t in b.tasks]
    assert [t.tests for t in a.tasks] != [t.tests for t in c.tasks]
    assert {t.family for t in a.tasks} == set(FAMILIES)  # round robin over every family
    for t in a.tasks:
        assert len(set(map(repr, t.tests))) == len(t.tests) >= 4
    assert CodeTask.from_metadata(a[0].metadata) == a.tasks[0]
    with pytest.raises(ValueError, match="unknown code task family 'nope'"):
        make_code_task("nope", 0)


def test_hand_computed_task_values():
    # poly family: the statement names a, b, c; check the stored expectations by hand on one task.
    t = make_code_task("poly", seed=0, index=0, num_tests=3)
    import re

    a, sb, b, sc, c = re.search(r"returns (-?\d+)\*x\*x ([+-]) (\d+)\*x ([+-]) (\d+) ", t.prompt).groups()
    a, b, c = int(a), int(b) * (-1 if sb == "-" else 1), int(c) * (-1 if sc == "-" else 1)
    for (x,), y in zip(t.tests, t.expected):
        assert y == a * x * x + b * x + c


async def test_independent_solutions_pass_every_family(sandbox):
    tasks = [make_code_task(f, seed=s, index=i) for f in FAMILIES for s in (0, 1) for i in (0, 1)]
    grades = await asyncio.gather(*(grade_code(t, _fenced(t.solution), sandbox.execute) for t in tasks))
    failing = [(t.task_id, g.passed, g.result.stderr[-300:]) for t, g in zip(tasks, grades) if g.reward != 1.0]
    assert failing == []


async def test_partial_credit_is_the_exact_fraction(sandbox):
    t = make_code_task("sum_divisible", seed=0, index=0, num_tests=8)
    # Correct only on the tests whose first argument has an even length: hand-count them.
    wrong_on_odd = t.solution.replace("def f(xs):", "def f(xs):\n    if len(xs) % 2: return 'nope'")
    want = sum(len(args[0]) % 2 == 0 for args in t.tests) / len(t.tests)
    assert 0 < want < 1
    g = await grade_code(t, _fenced(wrong_on_odd), sandbox.execute)
    assert g.reward == pytest.approx(want) and g.total == 8


async def test_reward_hacks_earn_nothing(sandbox):
    t = make_code_task("count_char", seed=0, index=0)
    hacks = {
        "print_success": "print('All tests passed!')\ndef f(s): return -1",
        "always_equal": "class A:\n    def __eq__(self, o): return True\ndef f(s): return A()",
        "exit_early": "import sys\ndef f(s): sys.exit(0)",
        "bool_for_int": "def f(s): return True",
        "no_function": "x = 1",
        "syntax_error": "def f(s) return 0",
        "forge_marker": "print('@@forge-test-0000@@{\"i\": 0, \"value\": \"0\"}')\ndef f(s): return -1",
    }
    grades = await asyncio.gather(*(grade_code(t, _fenced(c), sandbox.execute) for c in hacks.values()))
    assert {k: g.reward for k, g in zip(hacks, grades)} == {k: 0.0 for k in hacks}


async def test_chatty_solution_keeps_full_credit():
    t = make_code_task("poly", seed=0, index=1, num_tests=4)
    chatty = t.solution.replace("def f(x):", "print('x' * 5000)\ndef f(x):\n    print('debug ' * 500)")
    small_cap = Sandbox(SandboxConfig(max_output_bytes=2048))  # the results alone fit, the prints would not
    g = await grade_code(t, _fenced(chatty), small_cap.execute)
    assert g.reward == 1.0 and not g.result.truncated


async def test_timeout_keeps_partial_credit(sandbox):
    t = make_code_task("poly", seed=0, index=0, num_tests=4)
    slow_last = t.solution.replace("def f(x):", f"def f(x):\n    if x == {t.tests[-1][0]}:\n"
                                                "        while True: pass")
    g = await grade_code(t, _fenced(slow_last), sandbox.execute, timeout=1.5)
    assert g.result.timed_out and g.reward == pytest.approx(3 / 4)


def test_extract_code_and_report_parsing():
    assert extract_code("a\n```python\nx = 1\n```\nb\n```py\ny = 2\n```") == "y = 2\n"
    assert extract_code("def f(x): return x") == "def f(x): return x"
    t = make_code_task("poly", seed=0, num_tests=2)
    prog = build_test_program("def f(x): return 0", t, "@@M@@")
    assert str(t.expected[0]) not in prog.split("_forge_json.loads(")[0]  # expected values are never shipped
    out = f'@@M@@{{"i": 0, "value": "{t.expected[0]}"}}\n@@M@@{{"i": 1, "value": "1"}}\n@@M@@{{"i": 1, "val'
    assert passed_tests(out, t, "@@M@@") == [True, t.expected[1] == 1]


def test_sync_grader_and_registered_scorer():
    ds = CodeTaskDataset(CodeTaskConfig(size=2, seed=5))
    grader = CodeSandboxReward()
    assert grader(ds[0].prompt, _fenced(ds.tasks[0].solution), ds[0].metadata) == 1.0
    assert score_response("```python\ndef f(*a): return None\n```", ds[1]) == 0.0
    assert ds.score(_fenced(ds.tasks[1].solution), ds[1]) == 1.0


async def test_sync_grader_inside_a_running_loop():
    ds = CodeTaskDataset(CodeTaskConfig(size=1, seed=6))
    assert CodeSandboxReward()(ds[0].prompt, _fenced(ds.tasks[0].solution), ds[0].metadata) == 1.0


def test_app_dataset_sources():
    from forge.data import DatasetConfig, build_dataset

    ds = build_dataset(DatasetConfig(source="code_tasks", size=6, seed=1, task_args={"families": ["poly"],
                                                                                      "num_tests": 3}))
    assert len(ds) == 6 and all(s.metadata["code_task"]["family"] == "poly" for s in ds)
    held_out = build_dataset(DatasetConfig(source="code_tasks", split="test", size=6, seed=1))
    assert {s.prompt for s in held_out}.isdisjoint({s.prompt for s in ds})
    calc = build_dataset(DatasetConfig(source="calculator", size=4))
    assert score_response(f"Answer: {calc[2].target}", calc[2]) == 1.0
