"""The multi-turn rollout: token layout, loss mask and log-probs against hand-built references.

``generate`` here is a scripted stand-in for the generator service (the layer below the rollout); the token ids,
log-probs and masks it leads to are checked against text rendered by hand in ChatML and encoded independently.
"""

from __future__ import annotations

import pytest

from forge.envs.multiturn import (
    ChatRenderer,
    RolloutConfig,
    ToolEnv,
    ToolTask,
    calculator_tasks,
    run_episode,
    run_group,
)
from forge.envs.protocol import Environment, Observation
from forge.envs.tools import CalculatorTool, format_tool_call
from forge.models.tiny import build_byte_tokenizer
from forge.types import Completion

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def tok():
    return build_byte_tokenizer()


class Scripted:
    """Returns the scripted turns in order; records the prompts it was given."""

    def __init__(self, tok, turns: list[str], version: int = 3):
        self.tok, self.turns, self.version, self.prompts, self.params = tok, list(turns), version, [], []

    async def __call__(self, prompt, sampling_params=None):
        self.prompts.append(list(prompt))
        self.params.append(dict(sampling_params))
        text = self.turns.pop(0)
        ids = self.tok.encode(text, add_special_tokens=False)[: sampling_params["max_tokens"]]
        lps = [-0.01 * (i + 1) for i in range(len(ids))]
        return [Completion(prompt=prompt, text=self.tok.decode(ids, skip_special_tokens=True), prompt_ids=prompt,
                           token_ids=ids, logprobs=lps, stop_reason="stop", generator_version=self.version)]


async def test_tool_episode_layout_mask_and_reward(tok):
    task = ToolTask("What is 1234 * 5678 - 9?", str(1234 * 5678 - 9))
    call = format_tool_call("calculator", {"expression": "1234 * 5678"})
    turn1 = f"Let me compute. {call}<|im_end|>"
    turn2 = f"1234*5678 = 7006652, minus 9. Answer: {1234 * 5678 - 9}<|im_end|>"
    gen = Scripted(tok, [turn1, turn2])
    env = ToolEnv([CalculatorTool()], max_turns=3)
    assert isinstance(env, Environment)
    ep = await run_episode(env, task, gen, tok, RolloutConfig(max_total_tokens=400))

    # Reference, rendered by hand (ChatML) and encoded independently of the rollout.
    system = env.instructions
    opening = await ToolEnv([CalculatorTool()]).reset(task)
    system = opening.messages[0]["content"]
    prompt_text = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{task.question}<|im_end|>\n"
                   "<|im_start|>assistant\n")
    tool_text = "\n<|im_start|>tool\n7006652<|im_end|>\n<|im_start|>assistant\n"
    enc = lambda s: tok.encode(s, add_special_tokens=False)
    assert ep.prompt_ids == enc(prompt_text)
    t1, env_ids, t2 = enc(turn1), enc(tool_text), enc(turn2)
    assert ep.response_ids == t1 + env_ids + t2
    assert ep.response_mask == [1] * len(t1) + [0] * len(env_ids) + [1] * len(t2)
    lp = lambda n: [-0.01 * (i + 1) for i in range(n)]
    assert ep.generator_logprobs == lp(len(t1)) + [0.0] * len(env_ids) + lp(len(t2))
    assert ep.reward == 1.0 and ep.policy_version == 3
    assert ep.metadata == {"turns": 2, "finished": True, "tool_calls": 1, "tool_errors": 0}
    # the second turn was generated from the whole conversation so far, and stops on <|im_end|>
    assert gen.prompts[1] == ep.prompt_ids + t1 + env_ids
    assert gen.params[0]["stop_token_ids"] == [tok.convert_tokens_to_ids("<|im_end|>")] and gen.params[0]["n"] == 1


async def test_length_cut_turn_gets_its_closing_as_env_tokens(tok):
    call = format_tool_call("calculator", {"expression": "2+2"})
    gen = Scripted(tok, [call + " and more text that will be cut", "Answer: 5"])
    cfg = RolloutConfig(max_tokens_per_turn=len(tok.encode(call)) + 4, max_total_tokens=400)
    ep = await run_episode(ToolEnv([CalculatorTool()]), ToolTask("2+2?", "4"), gen, tok, cfg)
    cut = tok.encode(call + " and", add_special_tokens=False)
    env_text = "<|im_end|>\n<|im_start|>tool\n4<|im_end|>\n<|im_start|>assistant\n"
    env_ids = tok.encode(env_text, add_special_tokens=False)
    assert ep.response_ids[: len(cut) + len(env_ids)] == cut + env_ids
    assert ep.response_mask[len(cut): len(cut) + len(env_ids)] == [0] * len(env_ids)
    assert ep.reward == 0.0 and ep.metadata["finished"]  # wrong final answer (5 != 4)


async def test_budgets_turn_limit_and_bad_calls(tok):
    call = format_tool_call("calculator", {"expression": "1+1"})
    # Tool calls on every turn: the env ends the episode at max_turns with reward 0.
    gen = Scripted(tok, [call] * 3)
    ep = await run_episode(ToolEnv([CalculatorTool()], max_turns=2), ToolTask("1+1?", "2"), gen, tok)
    assert ep.metadata["turns"] == 2 and ep.reward == 0.0 and len(gen.turns) == 1
    # A malformed call returns an error message to the model instead of raising.
    gen = Scripted(tok, ["<tool_call>{oops}</tool_call>", "Answer: 2"])
    ep = await run_episode(ToolEnv([CalculatorTool()]), ToolTask("1+1?", "2"), gen, tok)
    assert ep.reward == 1.0 and ep.metadata["tool_errors"] == 1
    # The total budget stops the episode when a tool result would leave no room.
    gen = Scripted(tok, [call, "Answer: 2"])
    tight = RolloutConfig(max_total_tokens=len(tok.encode(call)) + 5)
    ep = await run_episode(ToolEnv([CalculatorTool()]), ToolTask("1+1?", "2"), gen, tok, tight)
    assert ep.metadata["turns"] == 1 and not ep.metadata["finished"] and sum(ep.response_mask) == len(ep.response_ids)


async def test_group_and_generate_contract(tok):
    tasks = calculator_tasks(4, seed=1)
    assert [t.task_id for t in tasks] == [f"calc-1-{i}" for i in range(4)]
    assert tasks[0].score(f"Answer: {tasks[0].answer}") == 1.0 and tasks[1].score("Answer: 0") == 0.0
    gen = Scripted(tok, [f"Answer: {tasks[0].answer}", "Answer: 1", "nothing"])
    eps = await run_group(lambda: ToolEnv([CalculatorTool()]), tasks[0], gen, tok, group_size=3)
    assert sorted(e.reward for e in eps) == [0.0, 0.0, 1.0] and len({e.group_id for e in eps}) == 1

    async def two(prompt, sampling_params=None):
        c = Completion(prompt, "x", [], [1], [0.0], "stop", 0)
        return [c, c]

    with pytest.raises(TypeError, match="generate must return one Completion"):
        await run_episode(ToolEnv([CalculatorTool()]), tasks[0], two, tok)


def test_renderer_needs_a_template_and_protocol_shapes(tok):
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="need a tokenizer with a chat_template"):
        ChatRenderer(NoTemplate())
    r = ChatRenderer(tok)
    assert r.turn_close == "<|im_end|>\n"
    obs = Observation([{"role": "user", "content": "hi"}])
    assert r.continuation_ids(obs.messages, tok.encode("x<|im_end|>")) == tok.encode(
        "\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


async def test_app_helpers_build_datasets_and_groups(tok):
    from forge.data import score_response
    from forge.envs.grpo import ToolEnvConfig, env_dataset, make_tool_env, tool_episode_group

    calc = env_dataset("calculator", size=3, seed=2)
    assert score_response(f"Answer: {calc[0].target}", calc[0]) == 1.0
    code = env_dataset("code_tasks", size=2, seed=2, num_tests=3)
    assert code[0].metadata["task"] == "code_sandbox" and len(code.tasks[0].tests) == 3
    train = {(t.prompt, repr(t.tests)) for t in env_dataset("code_tasks", size=50, seed=0).tasks}
    test = {(t.prompt, repr(t.tests)) for t in env_dataset("code_tasks", size=50, seed=0, split="test").tasks}
    assert len(train) == len(test) == 50 and not train & test  # the held-out split shares no task
    with pytest.raises(ValueError, match="unknown environment dataset 'x'"):
        env_dataset("x")
    env = make_tool_env(ToolEnvConfig(tools=("calculator", "python")))  # python: an in-process sandbox
    assert [t.name for t in env.tools] == ["calculator", "python"]
    assert await env.tools[1](code="print(6 * 7)") == "42"
    with pytest.raises(ValueError, match="non-empty subset"):
        ToolEnvConfig(tools=("web",))
    call = format_tool_call("calculator", {"expression": calc[0].prompt[len("What is "):-1]})
    gen = Scripted(tok, [call, f"Answer: {calc[0].target}", "Answer: 0"])
    eps = await tool_episode_group(calc[0], gen, tok, group_size=2, config=ToolEnvConfig(max_total_tokens=400))
    assert sorted(e.reward for e in eps) == [0.0, 1.0]


TOOL_TEMPLATE = (  # a minimal tools-aware ChatML template, in the style of Qwen2.5's
    "{% if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t.function.name }}: "
    "{{ t.function.description }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


async def test_tool_template_of_the_tokenizer_is_used():
    from forge.envs.grpo import ToolEnvConfig, env_dataset, template_renders_tools, tool_episode_group

    tok = build_byte_tokenizer()
    tok.chat_template = TOOL_TEMPLATE
    assert template_renders_tools(tok) and not template_renders_tools(build_byte_tokenizer())
    sample = env_dataset("calculator", size=1, seed=0)[0]
    gen = Scripted(tok, [f"Answer: {sample.target}"])
    (ep,) = await tool_episode_group(sample, gen, tok, group_size=1, config=ToolEnvConfig())
    prompt = tok.decode(ep.prompt_ids)
    calc = CalculatorTool()
    assert prompt.startswith(f"<|im_start|>system\n# Tools\ncalculator: {calc.description}\n<|im_end|>\n")
    assert "Tools (call one by writing" not in prompt  # described once, by the template
    assert ep.reward == 1.0


async def test_multiturn_episode_collates_with_tool_tokens_masked(tok):
    from forge.rl.batch import collate_episodes

    call = format_tool_call("calculator", {"expression": "3*4"})
    gen = Scripted(tok, [call + "<|im_end|>", "Answer: 12<|im_end|>"])
    ep = await run_episode(ToolEnv([CalculatorTool()]), ToolTask("3*4?", "12"), gen, tok)
    ep.advantage = 1.5
    batch = collate_episodes([ep], pad_id=tok.pad_token_id)
    p = len(ep.prompt_ids)
    # target t scores input t+1: response token j sits at target position p - 1 + j
    assert batch.target_ids[0, p - 1: p - 1 + ep.response_len].tolist() == ep.response_ids
    assert batch.loss_mask[0, p - 1: p - 1 + ep.response_len].tolist() == [float(m) for m in ep.response_mask]
    assert batch.loss_mask.sum().item() == sum(ep.response_mask) < ep.response_len
    on = [j for j, m in enumerate(ep.response_mask) if m]
    assert batch.generator_logprobs[0, [p - 1 + j for j in on]].tolist() == pytest.approx(
        [ep.generator_logprobs[j] for j in on])
    assert batch.generator_logprobs[0][batch.loss_mask[0] == 0].abs().sum().item() == 0.0
