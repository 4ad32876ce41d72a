"""What a GRPO loop needs from the environments, in the app's own terms (Samples in, Episodes out).

    ds = env_dataset("code_tasks", size=1000, seed=0)          # PromptDataset; scored by forge.data.score_response
    ds = env_dataset("calculator", size=1000, seed=0)          # numeric answers (single-turn scorer: "numeric")

    # multi-turn rollouts of one prompt (a GRPO group), tool tokens masked out of the loss:
    episodes = await tool_episode_group(sample, policy.generate.route, tokenizer, group_size=8,
                                        config=ToolEnvConfig(tools=("calculator",)), execute=coder.execute.route)

``code_tasks`` samples are single-turn: the app's usual ``generate -> score_response`` path grades them in the
sandbox (the ``code_sandbox`` scorer is registered when ``forge.envs.code_tasks`` is imported). ``calculator``
samples work single-turn (the ``numeric`` scorer) or multi-turn through ``tool_episode_group``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from forge.data.sample import PromptDataset, Sample
from forge.envs.code_tasks import CodeTaskConfig, CodeTaskDataset
from forge.envs.multiturn import ChatRenderer, RolloutConfig, ToolEnv, ToolTask, calculator_tasks, run_group
from forge.envs.sandbox import Sandbox, SandboxConfig
from forge.envs.tools import CalculatorTool, PythonTool
from forge.types import Episode

ENV_DATASETS = ("code_tasks", "calculator")


def env_dataset(name: str, size: int = 1000, seed: int = 0, split: str = "train", **kwargs: Any) -> PromptDataset:
    """Generated tasks as a ``PromptDataset``: ``code_tasks`` (kwargs: num_tests, families) or ``calculator``
    (kwargs: digits). ``split="test"`` draws from a disjoint seed stream (held-out tasks); any other split name
    (train, rl) is the training stream."""
    seed = 2 * seed + 1 if split == "test" else 2 * seed
    if name == "code_tasks":
        return CodeTaskDataset(CodeTaskConfig(size=size, seed=seed, **kwargs))
    if name == "calculator":
        tasks = calculator_tasks(size, seed, **kwargs)
        return PromptDataset([Sample(t.question, t.answer, {"task": "numeric", "task_id": t.task_id})
                              for t in tasks], name="calculator")
    raise ValueError(f"unknown environment dataset {name!r}; valid: {list(ENV_DATASETS)}")


@dataclass(frozen=True)
class ToolEnvConfig:
    """A multi-turn tool environment and its rollout budgets."""

    tools: tuple[str, ...] = ("calculator",)  # tools offered: calculator, python (the sandbox)
    max_turns: int = 4  # model turns per episode, the final answer included
    max_tokens_per_turn: int = 64  # sampling budget of one model turn
    max_total_tokens: int = 256  # response budget: model and tool tokens together
    python_timeout_s: float = 5.0  # wall-clock limit of one python tool call
    sampling_params: dict[str, Any] = field(default_factory=dict)  # extra sampling params (temperature, ...)

    def __post_init__(self):
        unknown = [t for t in self.tools if t not in ("calculator", "python")]
        if unknown or not self.tools:
            raise ValueError(f"ToolEnvConfig.tools must be a non-empty subset of ('calculator', 'python'), "
                             f"got {self.tools}")

    @property
    def rollout(self) -> RolloutConfig:
        return RolloutConfig(max_turns=self.max_turns, max_tokens_per_turn=self.max_tokens_per_turn,
                             max_total_tokens=self.max_total_tokens, sampling_params=dict(self.sampling_params))


_SANDBOX: Sandbox | None = None


def _local_sandbox() -> Sandbox:
    """An in-process sandbox engine for the python tool when no ``SandboxedPythonCoder`` service is given."""
    global _SANDBOX
    if _SANDBOX is None:
        _SANDBOX = Sandbox(SandboxConfig(max_concurrency=8))
    return _SANDBOX


def template_renders_tools(tokenizer: Any) -> bool:
    """Does the tokenizer's chat template render a ``tools=`` list itself (Qwen2.5, Llama 3.1, Hermes ...)?"""
    return "tools" in (getattr(tokenizer, "chat_template", None) or "")


def make_tool_env(config: ToolEnvConfig, execute: Callable[..., Awaitable[Any]] | None = None,
                  describe_tools: bool = True) -> ToolEnv:
    """A fresh ``ToolEnv``; the python tool runs code through ``execute`` (``coder.execute.route``), or in an
    in-process ``Sandbox`` when it is None.
    ``describe_tools=False`` leaves the tool descriptions to a chat template that renders them."""
    tools = []
    for name in config.tools:
        if name == "calculator":
            tools.append(CalculatorTool())
        else:
            tools.append(PythonTool(execute or _local_sandbox().execute, timeout=config.python_timeout_s))
    return ToolEnv(tools, max_turns=config.max_turns, describe_tools=describe_tools)


async def tool_episode_group(sample: Sample, generate: Callable[..., Awaitable[Any]], tokenizer: Any,
                             group_size: int, config: ToolEnvConfig | None = None,
                             execute: Callable[..., Awaitable[Any]] | None = None) -> list[Episode]:
    """``group_size`` multi-turn episodes on ``sample`` (question = its prompt text, answer = its target)."""
    if not isinstance(sample.prompt, str):
        raise TypeError("tool episodes start from the raw question text; build the dataset without "
                        f"chat_template (the rollout renders the conversation), got {type(sample.prompt).__name__}")
    cfg = config or ToolEnvConfig()
    task = ToolTask(sample.prompt, sample.target, str(sample.metadata.get("task_id", "")))
    # The tokenizer's own tool template when it has one (issue 8), else forge's system-prompt description.
    native = template_renders_tools(tokenizer)
    renderer = ChatRenderer(tokenizer, tools=make_tool_env(cfg, execute).tools if native else ())
    return await run_group(lambda: make_tool_env(cfg, execute, describe_tools=not native), task, generate,
                           tokenizer, group_size, cfg.rollout, renderer)
