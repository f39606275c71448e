"""Gridbot: the case loop of grid-based community governance, run in Telegram chats."""
