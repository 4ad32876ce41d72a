"""Reward functions and graders against hand-computed values."""

import threading

import pytest

from forge.rl.grading import (
    FormatReward,
    MathReward,
    OverlongReward,
    ThinkingReward,
    WeightedReward,
    with_target,
)
from forge.rl.rewards import extract_answer, math_equal, overlong_penalty


@pytest.mark.parametrize(
    "text, answer",
    [
        ("so the result is \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
        ("first \\boxed{3} then \\boxed{ {4} }", "{4}"),
        ("<think>2+2</think><answer> 4 </answer>", "4"),
        ("Natalia sold 48 clips... #### 72", "72"),
        ("The total is 1,234 apples and 5 pears.", "5"),
        ("costs -3.5 dollars", "-3.5"),
        ("no digits here", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "pred, gold, equal",
    [
        ("0.5", "\\frac{1}{2}", True),
        ("1,234", "1234", True),
        ("2^{10}", "1024", True),
        ("72.", "72", True),
        ("3", "4", False),
        ("\\sqrt{2}", "1.41", False),
        ("x" * 2000, "1", False),
    ],
)
def test_math_equal(pred, gold, equal):
    assert math_equal(pred, gold) is equal


def test_math_reward_as_callable_and_in_a_thread():
    reward = MathReward()
    assert reward("q", "I think \\boxed{\\frac{3}{4}}", {"target": "0.75"}) == 1.0
    assert reward("q", "The answer is 12", {"target": "#### 12"}) == 1.0
    assert reward("q", "The answer is 13", {"target": "12"}) == 0.0
    assert reward("q", "no answer", {"target": "12"}) == 0.0
    with pytest.raises(KeyError, match=r"metadata\['target'\]"):
        reward("q", "\\boxed{1}", {})
    out = []  # math-verify's signal timeout only works in the main thread: the grader must cope elsewhere
    thread = threading.Thread(target=lambda: out.append(reward("q", "\\boxed{0.5}", with_target({}, "1/2"))))
    thread.start()
    thread.join()
    assert out == [1.0]


def test_format_and_thinking_rewards():
    fmt, think = FormatReward(), ThinkingReward(min_chars=3)
    good = "<think>add them</think>\n<answer>5</answer>"
    assert fmt("q", good, {}) == 1.0 and think("q", good, {}) == 1.0
    assert fmt("q", "<answer>5</answer>", {}) == 0.0
    assert fmt("q", good + " trailing text", {}) == 0.0
    assert think("q", "<think>ok</think>", {}) == 0.0  # 2 characters < min_chars
    assert think("q", "<think>never closed", {}) == 0.0


@pytest.mark.parametrize(
    "length, expected", [(0, 0.0), (16, 0.0), (17, -0.25), (18, -0.5), (20, -1.0), (21, -1.0)]
)
def test_dapo_overlong_shaping_hand_computed(length, expected):
    # Lmax = 20, Lc = 4: free up to 16 tokens, then linear down to -1 at 20, -1 beyond.
    assert overlong_penalty(length, max_len=20, cache_len=4) == expected
    assert OverlongReward(max_len=20, cache_len=4)("q", "text", {"response_len": length}) == expected


def test_overlong_errors():
    with pytest.raises(ValueError, match="0 < cache_len <= max_len"):
        OverlongReward(max_len=4, cache_len=8)
    with pytest.raises(KeyError, match="response_len"):
        OverlongReward(max_len=20, cache_len=4)("q", "text", {})


def test_weighted_reward_combines_and_reports_each_component():
    reward = WeightedReward(
        {
            "math": (MathReward(), 1.0),
            "format": (FormatReward(), 0.1),
            "overlong": (OverlongReward(max_len=20, cache_len=4), 1.0),
        }
    )
    meta = {"target": "5", "response_len": 18}
    result = reward.evaluate("q", "<think>2+3</think><answer>5</answer>", meta)
    assert result.components == {"math": 1.0, "format": 1.0, "overlong": -0.5}
    assert result.total == pytest.approx(1.0 + 0.1 - 0.5)
    assert result.metrics == {
        "reward/total": pytest.approx(0.6),
        "reward/math": 1.0,
        "reward/format": 1.0,
        "reward/overlong": -0.5,
    }
    assert reward("q", "<answer>4</answer>", meta) == pytest.approx(-0.5)
    with pytest.raises(TypeError, match="must be \\(grader, weight\\)"):
        WeightedReward({"math": MathReward()})


def test_importing_forge_rl_does_not_import_monarch():
    import subprocess
    import sys

    code = (
        "import sys, forge.rl.grading, forge.rl.loss, forge.rl.replay, forge.rl.batch, forge.rl.advantages; "
        "print(any(m == 'monarch' or m.startswith('monarch.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
