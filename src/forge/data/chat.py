"""Chat templates through the tokenizer: prompts become the exact text a chat model was trained on.

``render_prompt`` applies ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)``, so the text ends
with the assistant header and the generator continues as the assistant. A plain-text prompt is wrapped as one
user message (after an optional system message).
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_prompt", "to_messages"]


def to_messages(prompt: str | list[dict[str, str]], system_prompt: str | None = None) -> list[dict[str, str]]:
    """Chat messages for ``prompt``; ``system_prompt`` is prepended unless the prompt already has a system turn."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        messages = [dict(m) for m in prompt]
    else:
        raise TypeError(f"a prompt is text or a list of {{'role', 'content'}} messages, got {prompt!r:.120}")
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def render_prompt(tokenizer: Any, prompt: str | list[dict[str, str]], system_prompt: str | None = None) -> str:
    """The prompt as text through the tokenizer's chat template, ending with the assistant turn's header."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template; "
            "set chat_template: false to use raw prompts, or use a tokenizer that defines one"
        )
    return tokenizer.apply_chat_template(to_messages(prompt, system_prompt), add_generation_prompt=True, tokenize=False)
