"""Staff notifications: the outbox dispatcher and the channels it delivers to.

Every notification is a `Notification` row written in the same transaction as the event
that causes it (see `bot.complaint_records`).  This package delivers those rows to each
active `QueueChannel` of the row's queue — a WeCom group robot, a Telegram chat or an
e-mail address — with retries, per-channel delivery records and channel rate limits:

- `render`: the short, masked Chinese text a notification becomes;
- `channels`: one small sender class per channel kind;
- `outbox`: claiming due rows, recording attempts, backoff, dead rows;
- `queues`: which channels a queue has, and the static ones from `config.toml`;
- `links`: one-time codes that link a Telegram chat to a queue, and `/queue` listings;
- `dispatcher`: the loop that ties them together;
- `service`: the cleanup context that runs the dispatcher inside `xiaobao serve`.
"""
