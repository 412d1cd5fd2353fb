"""The conversation: items in order, the engine's own facts about each, and what has been answered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .output import SpokenItem

MAX_ITEMS = 2_000  # conversation items kept; the oldest go first on very long calls


@dataclass
class ItemMeta:
    """Engine-side facts about a conversation item that the wire item does not carry."""

    generated_ms: int | None = None  # assistant audio actually produced (the truncate limit)
    speech: SpokenItem | None = None
    intent: str | None = None  # for function calls: the intent that made them


class Conversation:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._meta: dict[str, ItemMeta] = {}
        self.answered = 0  # items before this index have been responded to

    def add(self, item: dict[str, Any], meta: ItemMeta | None = None) -> str | None:
        """Append an item; returns the id of the item before it (`previous_item_id`)."""
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(item)
        self._meta[item["id"]] = meta or ItemMeta()
        if len(self.items) > MAX_ITEMS:
            dropped = self.items.pop(0)
            self._meta.pop(dropped["id"], None)
            self.answered = max(0, self.answered - 1)
        return previous

    def find(self, item_id: str) -> dict[str, Any] | None:
        return next((i for i in self.items if i["id"] == item_id), None)

    def meta(self, item_id: str) -> ItemMeta | None:
        return self._meta.get(item_id)

    def delete(self, item: dict[str, Any]) -> None:
        index = self.items.index(item)
        self.items.pop(index)
        self._meta.pop(item["id"], None)
        if index < self.answered:
            self.answered -= 1

    def unanswered(self) -> list[dict[str, Any]]:
        return self.items[self.answered :]

    def mark_answered(self) -> None:
        self.answered = len(self.items)

    def has_function_call(self, call_id: Any) -> bool:
        return any(i.get("type") == "function_call" and i.get("call_id") == call_id for i in self.items)

    def function_call(self, call_id: Any) -> dict[str, Any] | None:
        return next(
            (i for i in self.items if i.get("type") == "function_call" and i.get("call_id") == call_id), None
        )
