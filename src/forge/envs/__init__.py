"""Environments: sandboxed code execution, code RL tasks and multi-turn tool use (issue 8).

    sandbox.py     bubblewrap execution engine (Sandbox, SandboxConfig, ExecutionResult) + its threat model
    code_tasks.py  generated function-writing problems with hidden unit tests; reward = fraction passed
    protocol.py    the environment protocol: reset(task) -> observation, step(action) -> (observation, reward, done)
    tools.py       tool-call parsing (<tool_call> JSON format), the calculator and Python-sandbox tools
    multiturn.py   ToolEnv, calculator tasks and the multi-turn rollout (Episode with tool tokens masked out)
    grpo.py        what a GRPO app calls: env_dataset(...), ToolEnvConfig, tool_episode_group(...)

Plain Python: nothing here imports Monarch (forge/actors/coder.py is the service shell).
"""
