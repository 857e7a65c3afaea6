"""Prompt templates: the standalone rewrite, the augmentation variants and the rating prompt.

Templates are `str.format` strings over `{history}` (earlier turns, oldest first, one
`role: text` line each; "(none)" for a first turn) and `{question}` (the current user turn);
the augmentation templates also get `{response}` (the last assistant turn); `RATING_PROMPT`
(`{passage}`) follows the conversation's own messages when an endpoint rates a passage.
A template file given to `convsparse rewrite --prompt` replaces `DEFAULT_REWRITE_PROMPT`;
it is sent as the one user message (with `REWRITE_SYSTEM` as system).
"""

from __future__ import annotations

from collections.abc import Sequence

from convsparse.conversation import Turn
from convsparse.training.generators.base import Prompt

REWRITE_SYSTEM = "You rewrite questions from a conversation so they can be understood on their own."

DEFAULT_REWRITE_PROMPT = """\
Conversation so far:
{history}

Current question: {question}

Rewrite the current question as a standalone question that can be understood without the
conversation: resolve pronouns and references ("it", "that one", "the second") to what they
mean, keep every constraint the user gave, add nothing else. Answer with the rewritten question
only, on one line."""

AUGMENT_PROMPTS: dict[str, str] = {
    # a paraphrase of the current question: the conversation stays, the wording changes
    "question": """\
Conversation so far:
{history}

Current question: {question}

Write one different way a user could ask the current question in this conversation (it may
lean on the conversation the same way). Answer with the question only, on one line.""",
    # an alternative assistant response before the current question (G2R's response variants)
    "response": """\
Conversation so far:
{history}

Write a different, equally helpful assistant reply in place of the last assistant turn:
{response}

Answer with the reply only.""",
}

RATING_PROMPT = """\
Passage:
{passage}

On a scale from 0 (useless) to 10 (answers it fully), how well does the passage answer the
user's last question in this conversation? Answer with the number only."""


def conversation_messages(turns: Sequence[Turn]) -> Prompt:
    """The conversation itself as chat messages (what the `llm` teacher scores a passage after)."""
    return [{"role": t.role, "content": t.text} for t in turns]


def history_text(turns: Sequence[Turn]) -> str:
    earlier = list(turns[:-1])
    return "\n".join(f"{t.role}: {t.text}" for t in earlier) if earlier else "(none)"


def render(template: str, turns: Sequence[Turn], *, system: str | None = REWRITE_SYSTEM,
           **extra: str) -> Prompt:
    """Chat messages for `template` filled from `turns` (the last one is the current question)."""
    last_assistant = next((t.text for t in reversed(turns) if t.role == "assistant"), "")
    content = template.format(history=history_text(turns), question=turns[-1].text,
                              response=last_assistant, **extra)
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": content}]


def check_template(template: str) -> str:
    """`template`, or a ValueError naming the placeholder it uses that does not exist."""
    try:
        render(template, [Turn(role="user", text="q")])
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"prompt template: unknown or broken placeholder {e} (use {{history}}, "
                         "{question}, {response}; write literal braces as {{ }})") from None
    return template


def clean_generation(text: str) -> str:
    """The first non-empty line, without a `Rewrite:` style label or one pair of quotes around
    the whole line."""
    for line in text.strip().splitlines():
        line = line.strip()
        if ":" in line[:24] and line.split(":", 1)[0].strip().lower() in (
                "rewrite", "rewritten question", "standalone question", "question", "answer"):
            line = line.split(":", 1)[1].strip()
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
            line = line[1:-1].strip()
        if line:
            return line
    return ""


__all__ = ["AUGMENT_PROMPTS", "check_template", "DEFAULT_REWRITE_PROMPT", "RATING_PROMPT", "REWRITE_SYSTEM",
           "clean_generation", "conversation_messages", "history_text", "render"]
