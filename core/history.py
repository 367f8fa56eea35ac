"""The rules a history must keep, and the repair of a history cut short."""

from __future__ import annotations

from collections.abc import Sequence

from .types import ContentBlock, Message, TextBlock, ToolResultBlock, ToolUseBlock

__all__ = ["alternates", "alternating", "check_history", "repair_history"]

INTERRUPTED = "the run was interrupted before this tool call finished; nothing more is known"
#: The user turn put before a history that starts with an assistant turn.
OPENING = "(the conversation so far)"


def check_history(messages: Sequence[Message]) -> list[str]:
    """The ways ``messages`` break the history rules (empty when valid).

    Every ``tool_use`` is followed, in the next message, by exactly one ``tool_result``
    with its id; no ``tool_result`` answers anything else; the first message is the user's.
    """
    problems: list[str] = []
    pending: list[str] = []
    for position, message in enumerate(messages):
        results = [b for b in message.content if type(b) is ToolResultBlock]
        if pending:
            answered = [r.tool_use_id for r in results]
            if message.role != "user" or sorted(answered) != sorted(pending):
                problems.append(
                    f"message {position}: tool calls {pending} are not answered exactly once"
                )
            pending = []
        elif results:
            problems.append(f"message {position}: tool_result without a preceding tool_use")
        if position == 0 and message.role != "user":
            problems.append("message 0: a history starts with a user message")
        if message.role == "assistant":
            if results:
                problems.append(f"message {position}: an assistant message holds tool results")
            pending = [b.id for b in message.content if type(b) is ToolUseBlock]
    if pending:
        problems.append(f"the last message's tool calls {pending} have no results")
    return problems


def repair_history(messages: Sequence[Message], *, reason: str = INTERRUPTED) -> list[Message]:
    """The messages to append so that a history cut short is valid again.

    A history written one whole message at a time can only be cut short after an assistant
    turn whose tool calls have no results yet: those calls get ``is_error`` results saying
    the run was interrupted (or ``reason``).
    """
    if not messages or messages[-1].role != "assistant":
        return []
    pending = messages[-1].tool_uses
    if not pending:
        return []
    return [
        Message(
            role="user",
            content=tuple(
                ToolResultBlock(tool_use_id=use.id, content=reason, is_error=True)
                for use in pending
            ),
        )
    ]


def alternates(messages: Sequence[Message], start: int = 0) -> bool:
    """Whether ``messages[start:]`` (after ``messages[:start]``, known to alternate) keep
    the turn rules every provider accepts: user first, then user and assistant turns in
    turn, none empty, and a user turn's tool results before its other blocks."""
    previous = messages[start - 1].role if start else "assistant"
    for message in messages[start:] if start else messages:
        if message.role == previous or not message.content:
            return False
        if message.role == "user" and not _results_first(message):
            return False
        previous = message.role
    return True


def alternating(messages: Sequence[Message]) -> tuple[Message, ...]:
    """``messages`` as a request must carry them (invariant 6): empty messages dropped,
    consecutive messages of one role merged into one turn (a failed run's dangling user
    message joins the next one; adjoining texts become paragraphs of one), tool results
    first in a user turn, and a user turn first.

    The stored history is never rewritten: this is what a provider is sent.
    """
    turns: list[tuple[str, list[ContentBlock]]] = []
    for message in messages:
        if not message.content:
            continue
        if turns and turns[-1][0] == message.role:
            blocks, content = turns[-1][1], list(message.content)
            last, first = blocks[-1], content[0]
            if isinstance(last, TextBlock) and isinstance(first, TextBlock):
                # Two turns' texts stay two paragraphs for providers that join blocks.
                blocks[-1] = TextBlock(text=f"{last.text}\n\n{first.text}")
                del content[0]
            blocks.extend(content)
        else:
            turns.append((message.role, list(message.content)))
    if turns and turns[0][0] == "assistant":
        turns.insert(0, ("user", [TextBlock(text=OPENING)]))
    out = []
    for role, blocks in turns:
        if role == "user":
            blocks.sort(key=lambda b: type(b) is not ToolResultBlock)  # stable: results first
        out.append(Message(role=role, content=tuple(blocks)))  # type: ignore[arg-type]
    return tuple(out)


def _results_first(message: Message) -> bool:
    seen_other = False
    for block in message.content:
        if type(block) is ToolResultBlock:
            if seen_other:
                return False
        else:
            seen_other = True
    return True
