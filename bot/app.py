"""The application factory: config in, wired aiohttp application out.

`create_app` is the only place that assembles the service: the shared services (see
`bot.services`) as a cleanup context, then every enabled channel.  Tests and `xiaobao
serve` start and stop it the same way; nothing is created at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bot import deadlines, leadership
from bot.config import Config
from bot.limits import LIMITS, RateLimits
from bot.notifications import service as notifications
from bot.services import SERVICES, open_services
from handlers import dashboard as staff_dashboard
from handlers import oversight as oversight_pages
from handlers import telegram as telegram_channel
from handlers import web as web_channel
from handlers import wechat as wechat_channel
from knowledge.index import KnowledgeIndex


def create_app(config: Config, knowledge: KnowledgeIndex | None = None) -> web.Application:
    """The service's aiohttp application with every enabled channel mounted."""
    app = web.Application(client_max_size=config.http.max_body_bytes)
    app[LIMITS] = RateLimits.from_config(config.limits)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        services = await open_services(config, knowledge)
        app[SERVICES] = services
        yield
        await services.close()

    app.cleanup_ctx.append(services_ctx)
    leadership.setup(app, config)  # before the schedulers and channels that wait on it
    deadlines.setup(app, config)
    web_channel.setup(app)
    telegram_channel.setup(app, config)
    wechat_channel.setup(app, config)
    staff_dashboard.setup(app, config, extensions=(oversight_pages.setup,))
    notifications.setup(app, config)  # after telegram: it sends with the running bot
    return app
