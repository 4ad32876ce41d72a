"""Code RL tasks: generated function-writing problems with hidden unit tests, graded in the sandbox (issue 8).

Each ``CodeTask`` asks for one Python function (``f(xs)``, ``f(s)``, ...) described in words, with one worked
example; its hidden tests are argument lists whose expected values are computed on the host by a reference
implementation. The reward of a response is the fraction of hidden tests its code passes when run in the sandbox.

Grading design (why it resists the usual reward hacks):
  * the expected values never enter the sandbox: the test program only reports what the function *returned*
    (JSON, one line per test, behind a random per-run marker) and the host compares; printing "all tests
    passed" or patching ``==`` earns nothing;
  * values are compared as canonical JSON (``json.dumps(sort_keys=True)``), so ``True`` is not ``1`` and an
    object with a permissive ``__eq__`` does not serialise;
  * each test runs in ``try/except BaseException``; a crash, ``sys.exit`` or an unserialisable value fails that
    test only, and lines written before a timeout still count (partial credit);
  * the solution's own ``print`` output is discarded (results go straight to file descriptor 1), so debug
    prints cannot push the results past the sandbox's output cap.

    tasks = CodeTaskDataset(CodeTaskConfig(size=200, seed=0))       # a PromptDataset-like list of Samples
    grader = CodeSandboxReward()                                     # a forge.rl.grading.Grader
    reward = grader(sample.prompt, response_text, sample.metadata)   # fraction of hidden tests passed
    grade = await grade_code(task, response_text, coder.execute.route)   # with a SandboxedPythonCoder service
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from forge.data.sample import PromptDataset, Sample, register_scorer
from forge.envs.sandbox import ExecutionResult, Sandbox, SandboxConfig
from forge.observability.metrics import record_metric
from forge.rl.grading import Grader

TASK_NAME = "code_sandbox"  # Sample.metadata["task"]: the scorer registered below
Execute = Callable[..., Awaitable[ExecutionResult]]  # execute(code, stdin=None, timeout=None)


@dataclass(frozen=True)
class CodeTask:
    """One function-writing problem. ``tests`` are argument lists; ``expected`` the reference outputs."""

    task_id: str  # "<family>-<seed>-<index>"
    family: str  # which generator made it
    func_name: str  # the function the response must define
    prompt: str  # the problem statement given to the model
    tests: tuple[tuple[Any, ...], ...]  # hidden test inputs, each a tuple of positional arguments
    expected: tuple[Any, ...]  # reference outputs, one per test (computed on the host)
    solution: str  # a reference solution (source), written independently of the host-side reference

    def to_metadata(self) -> dict[str, Any]:
        """What a ``Sample`` carries so any process can grade a response (JSON-serialisable)."""
        return {"task": TASK_NAME, "code_task": {**asdict(self), "tests": [list(t) for t in self.tests],
                                                 "expected": list(self.expected)}}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> CodeTask:
        if "code_task" not in metadata:
            raise KeyError(f"metadata has no 'code_task' (keys: {sorted(metadata)}); build samples with "
                           "CodeTaskDataset or CodeTask.to_metadata()")
        d = dict(metadata["code_task"])
        return cls(**{**d, "tests": tuple(tuple(t) for t in d["tests"]), "expected": tuple(d["expected"])})


# --- problem families: (statement, reference, solution source, input generator) -----------------------------
# Each family draws its parameters from `rng`; `ref` is the host-side reference, `solution` an independent
# implementation in the sandbox (tests/unit/envs check that the two agree on every family).


def _ints(rng: random.Random, n_lo=0, n_hi=8, lo=-20, hi=20) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(n_lo, n_hi))]


def _word(rng: random.Random, alphabet="abcde", lo=0, hi=10) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _fam_sum_divisible(rng):
    k = rng.randint(2, 7)
    return (f"returns the sum of the elements of the integer list `xs` that are divisible by {k}", "xs",
            lambda xs: sum(x for x in xs if x % k == 0),
            (f"def f(xs):\n    total = 0\n    for x in xs:\n        if x % {k} == 0:\n            total += x\n"
             "    return total\n"),
            lambda r: (_ints(r),))


def _fam_count_char(rng):
    c = rng.choice("abcde")
    return (f"returns how many times the character '{c}' occurs in the string `s`", "s",
            lambda s: s.count(c),
            f"def f(s):\n    return len([ch for ch in s if ch == {c!r}])\n",
            lambda r: (_word(r),))


def _fam_poly(rng):
    a, b, c = rng.randint(-5, 5), rng.randint(-9, 9), rng.randint(-9, 9)
    expr = f"{a}*x*x {'-' if b < 0 else '+'} {abs(b)}*x {'-' if c < 0 else '+'} {abs(c)}"  # "3*x*x - 2*x + 7"
    return (f"returns {expr} for the integer `x`", "x",
            lambda x: a * x * x + b * x + c,
            f"def f(x):\n    return x * ({a} * x + {b}) + {c}\n",
            lambda r: (r.randint(-50, 50),))


def _fam_count_multiples(rng):
    a, b = rng.sample(range(2, 10), 2)
    return (f"returns how many integers i with 1 <= i <= n are divisible by {a} or by {b} (n >= 0)", "n",
            lambda n: sum(1 for i in range(1, n + 1) if i % a == 0 or i % b == 0),
            (f"import math\ndef f(n):\n    l = {a} * {b} // math.gcd({a}, {b})\n"
             f"    return n // {a} + n // {b} - n // l\n"),
            lambda r: (r.randint(0, 300),))


def _fam_reverse_words(rng):
    sep = rng.choice([" ", ",", "-"])
    return (f"splits the string `s` on '{sep}', reverses the order of the pieces and joins them with '{sep}'",
            "s", lambda s: sep.join(reversed(s.split(sep))),
            f"def f(s):\n    parts = s.split({sep!r})\n    parts.reverse()\n    return {sep!r}.join(parts)\n",
            lambda r: (sep.join(_word(r, lo=1, hi=4) for _ in range(r.randint(1, 5))),))


def _fam_max_window(rng):
    k = rng.randint(1, 4)
    return ((f"returns the largest sum of {k} consecutive elements of the integer list `xs` "
             f"(xs has at least {k} elements)"), "xs",
            lambda xs: max(sum(xs[i:i + k]) for i in range(len(xs) - k + 1)),
            (f"def f(xs):\n    cur = sum(xs[:{k}])\n    best = cur\n    for i in range({k}, len(xs)):\n"
             f"        cur += xs[i] - xs[i - {k}]\n        best = max(best, cur)\n    return best\n"),
            lambda r: (_ints(r, n_lo=k, n_hi=k + 6),))


def _fam_digit_sum_base(rng):
    base = rng.randint(2, 9)
    return (f"returns the sum of the digits of the non-negative integer `n` written in base {base}", "n",
            lambda n: sum(int(d, base) for d in _to_base(n, base)),
            f"def f(n):\n    s = 0\n    while n:\n        n, d = divmod(n, {base})\n        s += d\n    return s\n",
            lambda r: (r.randint(0, 10_000),))


def _to_base(n: int, base: int) -> str:
    digits = ""
    while True:
        n, d = divmod(n, base)
        digits = str(d) + digits
        if n == 0:
            return digits


def _fam_unique_sorted(rng):
    desc = rng.random() < 0.5
    order = "descending" if desc else "ascending"
    return (f"returns the distinct values of the integer list `xs` as a list sorted in {order} order", "xs",
            lambda xs: sorted(set(xs), reverse=desc),
            ("def f(xs):\n    out = []\n    for x in xs:\n        if x not in out:\n            out.append(x)\n"
             f"    out.sort()\n    return out{'[::-1]' if desc else ''}\n"),
            lambda r: (_ints(r, lo=-5, hi=5),))


def _fam_caesar(rng):
    k = rng.randint(1, 25)
    return ((f"shifts every lowercase letter a-z of the string `s` forward by {k} places in the alphabet, "
             "wrapping from z to a, and leaves every other character unchanged"), "s",
            lambda s: "".join(chr((ord(ch) - 97 + k) % 26 + 97) if "a" <= ch <= "z" else ch for ch in s),
            ("import string\ndef f(s):\n    lo = string.ascii_lowercase\n"
             f"    table = str.maketrans(lo, lo[{k}:] + lo[:{k}])\n    return s.translate(table)\n"),
            lambda r: (_word(r, alphabet="abcxyz Z!", hi=12),))


def _fam_run_length(rng):
    return (("returns the run-length encoding of the string `s`: each maximal run of one character becomes "
             "the character followed by the run length, e.g. 'aaab' -> 'a3b1'"), "s",
            lambda s: "".join(f"{m.group(0)[0]}{len(m.group(0))}" for m in re.finditer(r"(.)\1*", s)),
            ("def f(s):\n    out = []\n    i = 0\n    while i < len(s):\n        j = i\n"
             "        while j < len(s) and s[j] == s[i]:\n            j += 1\n"
             "        out.append(s[i] + str(j - i))\n        i = j\n    return ''.join(out)\n"),
            lambda r: (_word(r, alphabet="aab", hi=12),))


FAMILIES: dict[str, Callable[[random.Random], tuple]] = {
    "sum_divisible": _fam_sum_divisible, "count_char": _fam_count_char, "poly": _fam_poly,
    "count_multiples": _fam_count_multiples, "reverse_words": _fam_reverse_words, "max_window": _fam_max_window,
    "digit_sum_base": _fam_digit_sum_base, "unique_sorted": _fam_unique_sorted, "caesar": _fam_caesar,
    "run_length": _fam_run_length,
}

PROMPT_TEMPLATE = (
    "Write a Python function `f({args})` that {statement}.\n"
    "Example: f({example_args}) == {example_out}\n"
    "Answer with the complete function in a ```python code block."
)


def make_code_task(family: str, seed: int, index: int = 0, num_tests: int = 8) -> CodeTask:
    """Generate task ``index`` of ``family`` deterministically from ``seed``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown code task family {family!r}; valid: {sorted(FAMILIES)}")
    if num_tests < 1:
        raise ValueError(f"num_tests must be >= 1, got {num_tests}")
    rng = random.Random(f"{family}/{seed}/{index}")
    statement, args, ref, solution, gen = FAMILIES[family](rng)
    example, tests = gen(rng), []
    seen = {json.dumps(example)}
    for _ in range(num_tests * 20):  # distinct inputs (small families may run out: keep what we have)
        t = gen(rng)
        if json.dumps(t) not in seen:
            seen.add(json.dumps(t))
            tests.append(t)
        if len(tests) == num_tests:
            break
    # JSON round trip: the sandbox sees exactly these values (tuples become lists), so must the reference.
    tests = [tuple(json.loads(json.dumps(list(t)))) for t in tests]
    prompt = PROMPT_TEMPLATE.format(args=args, statement=statement,
                                    example_args=", ".join(map(repr, example)), example_out=repr(ref(*example)))
    return CodeTask(task_id=f"{family}-{seed}-{index}", family=family, func_name="f", prompt=prompt,
                    tests=tuple(tests), expected=tuple(ref(*t) for t in tests), solution=solution)


@dataclass(frozen=True)
class CodeTaskConfig:
    """A generated set of code tasks."""

    size: int = 1000  # number of tasks
    seed: int = 0  # generation seed (a different seed gives different parameters and tests)
    num_tests: int = 8  # hidden tests per task
    families: tuple[str, ...] = ()  # families to draw from, round robin (empty = all)


class CodeTaskDataset(PromptDataset):
    """``size`` generated tasks as ``Sample``s (prompt text, target = reference solution, metadata = the task)."""

    def __init__(self, config: CodeTaskConfig | None = None):
        cfg = config or CodeTaskConfig()
        families = list(cfg.families) or sorted(FAMILIES)
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown code task families {unknown}; valid: {sorted(FAMILIES)}")
        self.config = cfg
        self.tasks = [make_code_task(families[i % len(families)], cfg.seed, i // len(families), cfg.num_tests)
                      for i in range(cfg.size)]
        super().__init__([Sample(t.prompt, t.solution, t.to_metadata()) for t in self.tasks], name="code_tasks")


# --- extracting and grading -------------------------------------------------------------------------------------
_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(response: str) -> str:
    """The last fenced code block of the response (```python ... ```), else the whole response."""
    blocks = _FENCE.findall(response)
    return blocks[-1] if blocks else response


_HARNESS = """\
import json as _forge_json, os as _forge_os, sys as _forge_sys
_forge_write, _forge_dumps = _forge_os.write, _forge_json.dumps
_forge_sys.stdout = open(_forge_os.devnull, "w")  # the solution's own prints cannot fill the output cap
_forge_ns = {{"__name__": "__solution__"}}
exec(compile({code!r}, "solution.py", "exec"), _forge_ns)
_forge_fn = _forge_ns.get({func_name!r})
for _forge_i, _forge_args in enumerate(_forge_json.loads({tests!r})):
    try:
        _forge_line = {{"i": _forge_i, "value": _forge_dumps(_forge_fn(*_forge_args), sort_keys=True)}}
    except BaseException as _forge_e:
        _forge_line = {{"i": _forge_i, "error": type(_forge_e).__name__}}
    _forge_write(1, ({marker!r} + _forge_dumps(_forge_line) + "\\n").encode())
"""


def build_test_program(code: str, task: CodeTask, marker: str) -> str:
    """A program that defines the response's code, calls ``task.func_name`` on every test input and prints the
    JSON of each returned value on a line starting with ``marker``. Expected values are not in it."""
    return _HARNESS.format(code=code, func_name=task.func_name, tests=json.dumps([list(t) for t in task.tests]),
                           marker=marker)


def passed_tests(stdout: str, task: CodeTask, marker: str) -> list[bool]:
    """Per test: did the reported value equal the expected one (canonical JSON)? Missing lines fail."""
    got: dict[int, str] = {}
    for line in stdout.splitlines():
        if line.startswith(marker):
            try:
                rec = json.loads(line[len(marker):])
                got.setdefault(int(rec["i"]), rec.get("value"))
            except (ValueError, KeyError, TypeError):
                continue  # a malformed line (e.g. cut by the output cap) counts as a failed test
    return [got.get(i) == json.dumps(exp, sort_keys=True) for i, exp in enumerate(task.expected)]


@dataclass(frozen=True)
class CodeGrade:
    """The outcome of grading one response."""

    reward: float  # fraction of hidden tests passed, in [0, 1]
    passed: int  # tests passed
    total: int  # tests run
    result: ExecutionResult | None = None  # the sandbox run (None when the response had no code)
    metrics: dict[str, float] = field(default_factory=dict)  # reward/code_pass_frac, code/timed_out, ...


async def grade_code(task: CodeTask, response: str, execute: Execute, timeout: float | None = None) -> CodeGrade:
    """Run the response's code against ``task``'s hidden tests through ``execute`` (a ``Sandbox.execute`` or a
    ``SandboxedPythonCoder`` service's ``coder.execute.route``)."""
    code = extract_code(response)
    if not code.strip():
        return CodeGrade(0.0, 0, len(task.tests), None, {"reward/code_pass_frac": 0.0})
    marker = f"@@forge-test-{secrets.token_hex(8)}@@"
    result = await execute(build_test_program(code, task, marker), timeout=timeout)
    ok = passed_tests(result.stdout, task, marker)
    reward = sum(ok) / len(ok)
    metrics = {"reward/code_pass_frac": reward, "code/timed_out": float(result.timed_out),
               "code/truncated": float(result.truncated), "code/exec_s": result.duration_s}
    return CodeGrade(reward, sum(ok), len(ok), result, metrics)


def _run_sync(coro):
    """Run a coroutine to completion from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class CodeSandboxReward(Grader):
    """Grader: the fraction of ``metadata['code_task']``'s hidden tests the response's code passes.

    Runs the tests in its own ``Sandbox`` (built lazily from ``config``); ``agrade`` is the async form.
    """

    name = "code"

    def __init__(self, config: SandboxConfig | None = None, timeout: float | None = None):
        self.config = config or SandboxConfig(timeout_s=5.0)
        self.timeout = timeout
        self._sandbox: Sandbox | None = None

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(self.config)
        return self._sandbox

    async def agrade(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> float:
        grade = await grade_code(CodeTask.from_metadata(metadata), completion, self.sandbox.execute, self.timeout)
        for key, value in grade.metrics.items():  # reward/code_pass_frac, code/timed_out, ... in the run's logs
            record_metric(key, value, "mean")
        return grade.reward

    def grade(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> float:
        return _run_sync(self.agrade(prompt, completion, metadata))


_DEFAULT_REWARD: CodeSandboxReward | None = None


@register_scorer(TASK_NAME)
def score_code(response: str, sample: Sample) -> float:
    """``forge.data.score_response`` hook: samples of ``CodeTaskDataset`` are scored in a default sandbox."""
    global _DEFAULT_REWARD
    if _DEFAULT_REWARD is None:
        _DEFAULT_REWARD = CodeSandboxReward()
    return _DEFAULT_REWARD.grade(sample.prompt, response, sample.metadata)


def task_families() -> Sequence[str]:
    return sorted(FAMILIES)
