"""Multi-turn tool-use episodes: ``ToolEnv``, tool tasks and the rollout that turns them into an ``Episode``.

    env = ToolEnv([CalculatorTool(), PythonTool(coder.execute.route)], max_turns=4)
    episode = await run_episode(env, task, policy.generate.route, tokenizer, RolloutConfig(max_total_tokens=512))
    episodes = await run_group(lambda: ToolEnv([CalculatorTool()]), task, policy.generate.route, tokenizer, 8)

Token-level rollout (why): the episode is built from token ids, never by re-tokenising text, so the trainer sees
exactly the tokens the generator sampled and their ``generator_logprobs``. Each model turn is generated from
``prompt_ids + response_ids so far`` (the generator takes token-id prompts); its sampled tokens get
``response_mask`` 1. The environment's reply (tool results) is rendered with the tokenizer's chat template as a
*continuation*: the text the template puts after a finished assistant turn, found by rendering a probe
conversation with and without the new messages and taking the difference. Those tokens (plus whatever closing
of the assistant turn the model did not sample itself, e.g. ``<|im_end|>\\n`` after a length cut) get mask 0 and
log-prob 0.0, so the loss never trains on tool or environment tokens (docs/DESIGN.md, ``Episode``).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from forge.data.answers import answers_match, extract_final_answer
from forge.envs.protocol import Message, Observation, StepResult
from forge.envs.tools import Tool, call_tool, parse_tool_calls, tool_schema, tools_system_prompt
from forge.observability.metrics import record_metric
from forge.types import Completion, Episode

Generate = Callable[..., Awaitable[Any]]  # generate(prompt_ids, sampling_params=...) -> Completion | [Completion]


# --- tasks -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolTask:
    """A question whose final answer is checked numerically (``forge.data.answers``)."""

    question: str  # the user message
    answer: str  # reference final answer
    task_id: str = ""  # for logs

    def score(self, final_turn: str) -> float:
        """1.0 iff the final answer of the model's last turn (``Answer: N``, ``\\boxed{}``, last number) matches."""
        pred = extract_final_answer(final_turn)
        return 1.0 if pred is not None and answers_match(pred, self.answer) else 0.0


def calculator_tasks(size: int, seed: int = 0, digits: int = 4) -> list[ToolTask]:
    """Arithmetic with large operands (worth a calculator call): ``a * b - c`` and ``(a + b) * c``."""
    if size < 1 or digits < 1:
        raise ValueError(f"calculator_tasks needs size >= 1 and digits >= 1, got size={size}, digits={digits}")
    rng = random.Random(f"calculator/{seed}")
    lo, hi = 10 ** (digits - 1), 10 ** digits - 1
    tasks = []
    for i in range(size):
        a, b, c = rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(2, 99)
        expr, value = (f"{a} * {b} - {c}", a * b - c) if i % 2 == 0 else (f"({a} + {b}) * {c}", (a + b) * c)
        tasks.append(ToolTask(f"What is {expr}?", str(value), f"calc-{seed}-{i}"))
    return tasks


# --- environment -------------------------------------------------------------------------------------------------
DEFAULT_INSTRUCTIONS = "Use a tool when it helps. Reply without a tool call when done, ending 'Answer: <number>'."


class ToolEnv:
    """Tool-calling environment: a turn with tool calls gets the tool results; a turn without one is the final
    answer and is scored by the task (``ToolTask.score``); a tool call on the last allowed turn scores 0."""

    def __init__(self, tools: Sequence[Tool], max_turns: int = 4, instructions: str = DEFAULT_INSTRUCTIONS,
                 describe_tools: bool = True):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        self.tools = list(tools)
        self.max_turns = max_turns  # model turns per episode, the final answer included
        self.instructions = instructions
        self.describe_tools = describe_tools  # False when the chat template renders the tools itself
        self._by_name = {t.name: t for t in self.tools}
        self.task: ToolTask | None = None
        self.turns = 0

    async def reset(self, task: ToolTask) -> Observation:
        self.task, self.turns = task, 0
        system = tools_system_prompt(self.tools, self.instructions) if self.describe_tools else self.instructions
        return Observation([{"role": "system", "content": system}, {"role": "user", "content": task.question}])

    async def step(self, action: str) -> StepResult:
        if self.task is None:
            raise RuntimeError("ToolEnv.step called before reset(task)")
        self.turns += 1
        calls = parse_tool_calls(action)
        if not calls:
            return StepResult(Observation([], {"final": True}), self.task.score(action), True)
        if self.turns >= self.max_turns:
            return StepResult(Observation([], {"final": False, "tool_calls": len(calls)}), 0.0, True)
        results = [await call_tool(self._by_name, c) for c in calls]
        messages = [{"role": "tool", "name": c.name or "invalid", "content": r} for c, r in zip(calls, results)]
        info = {"tool_calls": len(calls), "tool_errors": sum(r.startswith("error:") for r in results)}
        return StepResult(Observation(messages, info), 0.0, False)


# --- rendering ---------------------------------------------------------------------------------------------------
_SENTINEL = "FORGE-TURN-SENTINEL-5b1e"


class ChatRenderer:
    """Renders opening messages and environment replies to token ids with a tokenizer's chat template."""

    def __init__(self, tokenizer: Any, tools: Sequence[Tool] = ()):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("multi-turn rollouts need a tokenizer with a chat_template (e.g. forge.models.tiny's "
                             "ChatML tokenizer)")
        self.tokenizer = tokenizer
        self.tool_schemas = [tool_schema(t) for t in tools] or None  # passed to templates that render tools
        probe = self._render([{"role": "user", "content": "u"}, {"role": "assistant", "content": _SENTINEL}])
        self.turn_close = probe[probe.index(_SENTINEL) + len(_SENTINEL):]  # e.g. "<|im_end|>\n"
        close_ids = tokenizer.encode(self.turn_close, add_special_tokens=False)
        special = set(getattr(tokenizer, "all_special_ids", []))
        # Stop a model turn on the template's end-of-turn token (e.g. <|im_end|>) as well as on EOS.
        self.stop_token_ids = [close_ids[0]] if close_ids and close_ids[0] in special else []

    def _render(self, messages: list[Message], generation_prompt: bool = False) -> str:
        kwargs = {"tools": self.tool_schemas} if self.tool_schemas else {}
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                                  **kwargs)

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """The opening conversation with the generation prompt, as token ids: [P]."""
        return list(self.tokenizer.encode(self._render(messages, True), add_special_tokens=False))

    def continuation_ids(self, messages: list[Message], sampled_ids: Sequence[int]) -> list[int]:
        """Token ids that follow a model turn ``sampled_ids``: the rest of its turn closing, ``messages`` as the
        template renders them, then the next generation prompt."""
        base = [{"role": "user", "content": "u"}, {"role": "assistant", "content": _SENTINEL}]
        prefix, full = self._render(base), self._render(base + list(messages), True)
        if not full.startswith(prefix):
            raise ValueError("the chat template is not prefix-stable (rendering more messages changed earlier "
                             "text), so environment turns cannot be appended token-wise")
        sampled = self.tokenizer.decode(list(sampled_ids), skip_special_tokens=False)
        done = next((k for k in range(len(self.turn_close), 0, -1) if sampled.endswith(self.turn_close[:k])), 0)
        text = self.turn_close[done:] + full[len(prefix):]
        return list(self.tokenizer.encode(text, add_special_tokens=False))


# --- rollout -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutConfig:
    """Budgets of one multi-turn episode."""

    max_turns: int = 4  # model turns (the environment may end the episode earlier)
    max_tokens_per_turn: int = 128  # sampling budget of one model turn
    max_total_tokens: int = 512  # response budget of the episode: model and environment tokens together
    sampling_params: dict[str, Any] = field(default_factory=dict)  # extra sampling params (temperature, ...)

    def __post_init__(self):
        for name in ("max_turns", "max_tokens_per_turn", "max_total_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"RolloutConfig.{name} must be >= 1, got {getattr(self, name)}")


def _one_completion(out: Any) -> Completion:
    if isinstance(out, Completion):
        return out
    if isinstance(out, (list, tuple)) and len(out) == 1 and isinstance(out[0], Completion):
        return out[0]
    raise TypeError(f"generate must return one Completion (or a list of one; the rollout asks for n=1), got "
                    f"{type(out).__name__} of length {len(out) if hasattr(out, '__len__') else '?'}")


async def run_episode(env: Any, task: Any, generate: Generate, tokenizer: Any,
                      config: RolloutConfig | None = None, renderer: ChatRenderer | None = None) -> Episode:
    """Play one episode of ``env`` on ``task`` with ``generate``; see the module docstring for the token layout."""
    cfg = config or RolloutConfig()
    obs = await env.reset(task)
    renderer = renderer or ChatRenderer(tokenizer)
    prompt_ids = renderer.prompt_ids(obs.messages)
    response: list[int] = []
    mask: list[int] = []
    logprobs: list[float] = []
    versions: list[int] = []
    reward, turns, done, stats = 0.0, 0, False, {"tool_calls": 0, "tool_errors": 0}
    stop_ids = list(cfg.sampling_params.get("stop_token_ids") or []) + renderer.stop_token_ids
    while not done and turns < cfg.max_turns:
        budget = cfg.max_total_tokens - len(response)
        sampling = {**cfg.sampling_params, "n": 1, "max_tokens": min(cfg.max_tokens_per_turn, budget),
                    "stop_token_ids": stop_ids}
        c = _one_completion(await generate(prompt_ids + response, sampling_params=sampling))
        if len(c.logprobs) != len(c.token_ids):
            raise ValueError(f"Completion has {len(c.token_ids)} tokens but {len(c.logprobs)} logprobs; the "
                             "generator must return one log-prob per sampled token")
        response += c.token_ids
        mask += [1] * len(c.token_ids)
        logprobs += list(c.logprobs)
        versions.append(c.generator_version)
        turns += 1
        obs, step_reward, done = await env.step(c.text)
        reward += float(step_reward)
        for k in stats:
            stats[k] += int(obs.info.get(k, 0))
        if done or turns >= cfg.max_turns:
            break
        env_ids = renderer.continuation_ids(obs.messages, c.token_ids)
        if len(response) + len(env_ids) >= cfg.max_total_tokens:
            break  # no room left for another model turn after the tool results
        response += env_ids
        mask += [0] * len(env_ids)
        logprobs += [0.0] * len(env_ids)
    for key, value in (("env/turns", turns), ("env/tool_calls", stats["tool_calls"]),
                       ("env/tool_errors", stats["tool_errors"]), ("env/finished", float(done))):
        record_metric(key, value, "mean")
    return Episode(prompt_ids=prompt_ids, response_ids=response, reward=reward, generator_logprobs=logprobs,
                   policy_version=min(versions), response_mask=mask,
                   reward_components={"tool_task": reward},
                   metadata={"turns": turns, "finished": done, **stats})


async def run_group(env_factory: Callable[[], Any], task: Any, generate: Generate, tokenizer: Any,
                    group_size: int, config: RolloutConfig | None = None,
                    renderer: ChatRenderer | None = None) -> list[Episode]:
    """``group_size`` concurrent episodes on one task (a GRPO group: one fresh env each, a shared group id)."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    renderer = renderer or ChatRenderer(tokenizer)
    episodes = await asyncio.gather(*(run_episode(env_factory(), task, generate, tokenizer, config, renderer)
                                      for _ in range(group_size)))
    group_id = uuid.uuid4().hex[:12]
    for ep in episodes:
        ep.group_id = group_id
    return list(episodes)
