"""The grid's own rounds (issue 22): patrols (巡查), care visits (走访) and campaigns (专项任务).

What grid staff do unasked, in the same chats and with the same outbox, timers, reminder
lists, privacy and figures as cases. Each module holds one round; they file cases and owe
reminders through `bot.cases`, and `bot.ledger` counts them.
"""
