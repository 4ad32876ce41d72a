"""Tools for multi-turn episodes and the tool-call format the model writes (issue 8, item 4).

Format (Hermes / Qwen2.5 chat templates use the same one): a tool call is a JSON object inside tags,

    <tool_call>{"name": "calculator", "arguments": {"expression": "12 * (3 + 4)"}}</tool_call>

anywhere in the model's turn (several calls per turn are allowed, run in order). The result goes back as a
``{"role": "tool", "name": ..., "content": ...}`` message, which the tokenizer's chat template renders (Qwen's
wraps it in ``<tool_response>``; forge's tiny ChatML template as a ``tool`` turn). When a tokenizer's template
renders tools itself (it mentions ``tools``), their JSON schemas are passed to it; otherwise
``tools_system_prompt`` describes them and this format in the system message.

Tools: ``CalculatorTool`` (exact arithmetic on an AST whitelist, no ``eval``) and ``PythonTool`` (runs code in
the bubblewrap sandbox through any ``execute(code, timeout=)`` coroutine: ``Sandbox.execute`` or a
``SandboxedPythonCoder`` service's ``coder.execute.route``). A tool never raises for bad input: it returns an
``error: ...`` string the model can read.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
_TOOL_CALL_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One parsed call; ``error`` is set (and name/arguments may be empty) when the tagged text was malformed."""

    name: str
    arguments: dict[str, Any]
    error: str | None = None


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` in ``text``, in order."""
    calls = []
    for body in _TOOL_CALL_RE.findall(text):
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as e:
            calls.append(ToolCall("", {}, f"tool call is not valid JSON ({e.msg} at char {e.pos}): {body[:200]}"))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            calls.append(ToolCall("", {}, 'a tool call must be {"name": "<tool>", "arguments": {...}}, got '
                                  + body[:200]))
            continue
        args = obj.get("arguments", {})
        if isinstance(args, str):  # some models emit arguments as a JSON string (OpenAI's wire format)
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        if not isinstance(args, dict):
            calls.append(ToolCall(obj["name"], {}, f"'arguments' must be a JSON object, got {args!r:.200}"))
            continue
        calls.append(ToolCall(obj["name"], args))
    return calls


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The text of a call in the format ``parse_tool_calls`` reads (for prompts, examples and tests)."""
    return f"{TOOL_CALL_OPEN}{json.dumps({'name': name, 'arguments': arguments})}{TOOL_CALL_CLOSE}"


@runtime_checkable
class Tool(Protocol):
    """A callable tool: ``await tool(**arguments) -> str`` plus its JSON-schema description."""

    name: str  # what the model writes in "name"
    description: str  # one sentence for the system prompt / template
    parameters: dict[str, Any]  # JSON schema of the arguments object

    async def __call__(self, **arguments: Any) -> str: ...


def tool_schema(tool: Tool) -> dict[str, Any]:
    """The OpenAI-style schema chat templates expect in ``apply_chat_template(..., tools=[...])``."""
    return {"type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters}}


def tools_system_prompt(tools: Sequence[Tool], instructions: str = "") -> str:
    """A compact system message describing ``tools`` (one line each) and the call format, for templates that
    do not render tools themselves. Compact because byte-level tokenizers spend a token per character."""
    lines = [instructions.strip()] if instructions.strip() else []
    lines.append(f'Tools (call one by writing {TOOL_CALL_OPEN}{{"name": ..., "arguments": {{...}}}}'
                 f"{TOOL_CALL_CLOSE}, then end your turn):")
    for t in tools:
        props = t.parameters.get("properties", {})
        sig = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in props.items())
        lines.append(f"- {t.name}({sig}): {t.description}")
    return "\n".join(lines)


async def call_tool(tools: dict[str, Tool], call: ToolCall) -> str:
    """Run one parsed call; unknown tools, malformed calls and bad arguments come back as ``error: ...``."""
    if call.error:
        return f"error: {call.error}"
    tool = tools.get(call.name)
    if tool is None:
        return f"error: unknown tool {call.name!r}; available: {sorted(tools)}"
    required = tool.parameters.get("required", [])
    missing = [k for k in required if k not in call.arguments]
    extra = [k for k in call.arguments if k not in tool.parameters.get("properties", {})]
    if missing or extra:
        return (f"error: {call.name} takes arguments {sorted(tool.parameters.get('properties', {}))} "
                f"(required {required}); missing {missing}, unexpected {extra}")
    return await tool(**call.arguments)


# --- calculator ------------------------------------------------------------------------------------------------
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNOPS = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCS = {"abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt}


class CalculatorTool:
    """Exact arithmetic: + - * / // % **, parentheses, abs/round/min/max/sqrt. Python number semantics."""

    name = "calculator"
    description = "Evaluates an arithmetic expression exactly and returns the number."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["expression"],
        "properties": {"expression": {"type": "string", "description": "e.g. (17 + 5) * 3 / 4"}}}

    def __init__(self, max_chars: int = 300, max_exponent: int = 256, max_digits: int = 1000):
        self.max_chars = max_chars  # longest expression accepted
        self.max_exponent = max_exponent  # |b| allowed in a ** b (keeps 9**9**9 from eating the CPU)
        self.max_digits = max_digits  # longest integer result (digits) accepted

    async def __call__(self, expression: str = "") -> str:
        return self.evaluate(expression)

    def evaluate(self, expression: Any) -> str:
        if not isinstance(expression, str) or not expression.strip():
            return "error: expression must be a non-empty string such as '2 * (3 + 4)'"
        if len(expression) > self.max_chars:
            return f"error: expression longer than {self.max_chars} characters"
        try:
            value = self._eval(ast.parse(expression.strip(), mode="eval").body)
        except SyntaxError:
            return f"error: not an arithmetic expression: {expression!r}"
        except (ArithmeticError, ValueError, TypeError) as e:
            return f"error: {type(e).__name__}: {e}"
        return str(value)

    def _eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > self.max_exponent:
                raise ValueError(f"exponent {right} is larger than {self.max_exponent}")
            out = _BINOPS[type(node.op)](left, right)
            if isinstance(out, int) and out.bit_length() > self.max_digits * 3.33:
                raise ValueError(f"result has more than {self.max_digits} digits")
            return out
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
            return _UNOPS[type(node.op)](self._eval(node.operand))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords):
            return _FUNCS[node.func.id](*[self._eval(a) for a in node.args])
        raise TypeError(f"unsupported element {ast.dump(node)[:60]} (numbers, + - * / // % **, parentheses, "
                        f"{', '.join(_FUNCS)})")


# --- Python in the sandbox --------------------------------------------------------------------------------------
class PythonTool:
    """Runs a Python program in the bubblewrap sandbox and returns its stdout (and stderr / exit status)."""

    name = "python"
    description = "Runs a Python 3 program in a sandbox (no network, no files kept) and returns what it prints."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["code"],
        "properties": {"code": {"type": "string", "description": "the program"}}}

    def __init__(self, execute: Callable[..., Awaitable[Any]], timeout: float = 5.0, max_chars: int = 2000):
        self.execute = execute  # Sandbox.execute or coder.execute.route
        self.timeout = timeout  # seconds per call
        self.max_chars = max_chars  # longest result text handed back to the model

    async def __call__(self, code: str = "") -> str:
        if not isinstance(code, str) or not code.strip():
            return "error: code must be a non-empty string of Python source"
        r = await self.execute(code, timeout=self.timeout)
        text = r.stdout
        if r.stderr:
            text += ("\n" if text and not text.endswith("\n") else "") + "stderr:\n" + r.stderr
        if r.timed_out:
            text += f"\n[timed out after {self.timeout:g} s]"
        elif r.truncated:
            text += "\n[output truncated]"
        elif r.exit_code != 0:
            text += f"\n[exit code {r.exit_code}]"
        text = text.strip() or "(no output)"
        if len(text) <= self.max_chars:
            return text
        half = self.max_chars // 2  # keep both ends: a traceback's last line is the informative one
        return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"
