"""Tool-call parsing, the calculator (against Python's own arithmetic) and the sandboxed Python tool."""

from __future__ import annotations

import pytest

from forge.envs.sandbox import Sandbox, SandboxConfig
from forge.envs.tools import (
    CalculatorTool,
    PythonTool,
    Tool,
    ToolCall,
    call_tool,
    format_tool_call,
    parse_tool_calls,
    tool_schema,
    tools_system_prompt,
)

pytestmark = pytest.mark.timeout(60)


def test_parse_tool_calls_formats_and_errors():
    text = ('think <tool_call>{"name": "calculator", "arguments": {"expression": "1+2"}}</tool_call> and '
            '<tool_call>\n{"name": "python", "arguments": "{\\"code\\": \\"print(1)\\"}"}\n</tool_call>')
    assert parse_tool_calls(text) == [ToolCall("calculator", {"expression": "1+2"}),
                                      ToolCall("python", {"code": "print(1)"})]
    assert parse_tool_calls("no calls here, <tool_call> unclosed") == []
    bad = parse_tool_calls("<tool_call>{name: x}</tool_call><tool_call>[1]</tool_call>"
                           '<tool_call>{"name": "c", "arguments": 3}</tool_call>')
    assert [c.error is not None for c in bad] == [True, True, True]
    assert "not valid JSON" in bad[0].error and "must be {" in bad[1].error and "must be a JSON object" in bad[2].error
    round_trip = format_tool_call("calculator", {"expression": "2*3"})
    assert parse_tool_calls(round_trip) == [ToolCall("calculator", {"expression": "2*3"})]


@pytest.mark.parametrize("expr", ["2 + 3 * 4", "(17 + 5) * 3 / 4", "7 // 2 - 7 % 3", "-(2 ** 10) + abs(-5)",
                                  "123456789 * 987654321", "max(3, 9, 4) - min(2, 8)", "round(10 / 3, 2)"])
async def test_calculator_matches_python(expr):
    assert await CalculatorTool()(expression=expr) == str(eval(expr))  # eval is the independent reference here


@pytest.mark.parametrize("expr,msg", [("__import__('os').system('id')", "unsupported element"),
                                      ("2 ** 100000", "exponent"), ("1 / 0", "ZeroDivisionError"),
                                      ("", "non-empty"), ("2 +", "not an arithmetic expression"),
                                      ("(1).__class__", "unsupported element")])
async def test_calculator_rejects_without_raising(expr, msg):
    out = await CalculatorTool()(expression=expr)
    assert out.startswith("error:") and msg in out


async def test_call_tool_dispatch_errors():
    tools = {"calculator": CalculatorTool()}
    assert await call_tool(tools, ToolCall("calculator", {"expression": "6*7"})) == "42"
    assert "unknown tool 'web'" in await call_tool(tools, ToolCall("web", {}))
    out = await call_tool(tools, ToolCall("calculator", {"expr": "1"}))
    assert "missing ['expression']" in out and "unexpected ['expr']" in out
    assert (await call_tool(tools, ToolCall("", {}, "bad json"))) == "error: bad json"


async def test_python_tool_runs_in_the_sandbox():
    sb = Sandbox(SandboxConfig(timeout_s=3.0))
    tool = PythonTool(sb.execute, timeout=1.0, max_chars=200)  # 503 characters of output -> 200 kept
    assert isinstance(tool, Tool) and isinstance(CalculatorTool(), Tool)
    assert await tool(code="print(sum(i * i for i in range(10)))") == "285"
    err = await tool(code="import os; print('x'); os.listdir('/root')")
    assert err.startswith("x\nstderr:") and "FileNotFoundError" in err and err.endswith("[exit code 1]")
    assert (await tool(code="while True: pass")).endswith("[timed out after 1 s]")
    long = await tool(code="print('a' * 500 + 'END')")
    assert long == "a" * 100 + "\n[... 303 characters cut ...]\n" + "a" * 97 + "END"


def test_schema_and_system_prompt():
    calc = CalculatorTool()
    assert tool_schema(calc)["function"]["parameters"]["required"] == ["expression"]
    prompt = tools_system_prompt([calc], "Be brief.")
    assert prompt == ('Be brief.\nTools (call one by writing <tool_call>{"name": ..., "arguments": {...}}</tool_call>, '
                      "then end your turn):\n- calculator(expression: string): Evaluates an arithmetic expression "
                      "exactly and returns the number.")
