"""Which received updates Gridbot acts on, decided from their raw JSON before they are stored.

A bot made administrator of a group (recommended, so that whole albums arrive) receives every
message posted there. Gridbot keeps from a group what a bot in privacy mode would be given
and its handlers use, plus album photos (the captioned part may ask for a report):

- commands (`/report …`, `/bind …`, a photo captioned `/report …`),
- replies to Gridbot's own messages (answers to its prompts, reports in reply to its
  invitation),
- photos of an album,
- the service message that a group became a supergroup (its chat id changes).

Everything else posted in a group is chatter: it is recorded as received without its content.
Private chats, buttons and the bot's own membership changes are always kept.
"""

from __future__ import annotations

from typing import Any

GROUP_CHATS = ("group", "supergroup")


def update_kind(item: dict[str, Any]) -> str | None:
    """The update's type, e.g. `message` or `callback_query` (the field that holds it)."""
    for key, value in item.items():
        if key != "update_id" and isinstance(value, dict):
            return key[:40]
    return None


def acts_on(item: dict[str, Any], bot_id: int, allowed: list[str] | None = None) -> bool:
    """Whether any handler may act on this update, so that its content is worth keeping."""
    kind = update_kind(item)
    if kind is None:
        return True  # nothing recognisable: keep it, the processor sets it aside
    if allowed and kind not in allowed:
        return False
    body = item[kind]
    chat = body.get("chat")
    if kind == "edited_message":
        # Only a live location's updates in a private chat are used (巡查).
        return (isinstance(chat, dict) and chat.get("type") == "private"
                and "location" in body)
    if kind != "message" or not isinstance(chat, dict) or chat.get("type") not in GROUP_CHATS:
        return True
    return _group_message_used(body, bot_id)


def _group_message_used(message: dict[str, Any], bot_id: int) -> bool:
    sender = message.get("from")
    if isinstance(sender, dict) and sender.get("is_bot") and message.get("sender_chat") is None:
        return False  # other bots are ignored, whatever they post
    text = message.get("text") or message.get("caption") or ""
    if isinstance(text, str) and text.lstrip().startswith("/"):
        return True
    replied = message.get("reply_to_message")
    if isinstance(replied, dict):
        author = replied.get("from")
        if isinstance(author, dict) and author.get("id") == bot_id:
            return True
    if message.get("media_group_id") is not None and message.get("photo"):
        return True
    return message.get("migrate_to_chat_id") is not None
