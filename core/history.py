"""The rules a history must keep, and the repair of a history cut short."""

from __future__ import annotations

from collections.abc import Sequence

from .types import Message, ToolResultBlock, ToolUseBlock

__all__ = ["check_history", "repair_history"]

INTERRUPTED = "the run was interrupted before this tool call finished; nothing more is known"


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
