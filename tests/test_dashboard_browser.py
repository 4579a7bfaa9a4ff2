"""The staff dashboard in a real headless Chromium (Debian's package, driven by Playwright):
sign in as institution staff, see only one's own queue, claim, reply, resolve."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.app import create_app
from bot.models import Complaint, ComplaintEvent, ConsumerMessage, Notification, utcnow
from tests.test_browser import ARTIFACTS, CHROMIUM_FLAGS
from tests.test_dashboard import PASSWORD, Factory, services_of

pytestmark = pytest.mark.browser


@pytest.fixture
async def dashboard(chromium_path, aiohttp_server, config, knowledge_index):
    playwright_api = pytest.importorskip("playwright.async_api")
    server = await aiohttp_server(create_app(config, knowledge_index))
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS
        )
        context = await browser.new_context(viewport={"width": 1366, "height": 900},
                                            locale="zh-CN")
        page = await context.new_page()
        page.set_default_timeout(15000)
        yield server, page
        await browser.close()


async def test_institution_staff_claim_reply_and_resolve_in_a_real_browser(dashboard):
    server, page = dashboard
    data = Factory(server.app)
    now = utcnow()
    own = await data.complaint("icbc", risk=("扬言向媒体曝光",))
    late = await data.complaint("icbc", business="loan", received=now - timedelta(days=17))
    await data.complaint("icbc", business="wealth-management",
                         received=now - timedelta(days=13), agent=("疑似代理维权机构代写",))
    others = await data.complaint("ccb")
    await data.execute(update(Notification).where(Notification.complaint_id == late.id)
                       .values(status="dead", attempts=8, last_error="HTTP 502 from robot"))
    await data.staff("icbc-wang", "institution", "icbc")
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", lambda response: problems.append(f"{response.status} {response.url}")
            if response.status >= 400 else None)

    await page.goto(str(server.make_url("/staff/")))
    assert "/staff/login" in page.url
    await page.fill("#username", "icbc-wang")
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await page.wait_for_selector("table.queue")
    rows = page.locator("table.queue tbody tr")
    assert await rows.count() == 3
    tracking = {await row.get_attribute("data-tracking") for row in await rows.all()}
    assert own.tracking_no in tracking and others.tracking_no not in tracking
    assert "138****1234" in await page.inner_text("table.queue")
    assert await page.locator("tr.overdue").count() == 1
    assert await page.locator("tr.due-soon").count() == 1
    assert late.tracking_no in await page.inner_text("#dead-notifications")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-queue.png"), full_page=True)

    await page.click(f"a:text('{own.tracking_no}')")
    await page.wait_for_selector("#actions")
    assert "13800001234" in await page.inner_text("#contact")
    await page.click("#claim")
    await page.wait_for_selector("#assigned:text('ICBC-WANG')")

    await page.fill("#reply-text", "您好，我们已联系网点核实，三个工作日内回复您。")
    await page.click("#reply-send")
    await page.wait_for_selector("#history .event-reply")

    page.on("dialog", lambda dialog: dialog.accept())
    await page.fill("#resolve-outcome", "已退还年费300元，并向您致歉。")
    await page.click("#resolve-send")
    await page.wait_for_selector("#outcome")
    assert "已办结" in await page.inner_text("h1")
    assert await page.locator("#actions").count() == 0
    history = await page.inner_text("#history")
    for step in ("认领", "回复消费者", "办结"):
        assert step in history
    await page.screenshot(path=str(ARTIFACTS / "dashboard-complaint.png"), full_page=True)
    assert problems == []  # the CSP blocked nothing the page needs

    async with services_of(server.app).sessions() as session:
        record = await session.get(Complaint, own.id)
        kinds = (await session.scalars(select(ComplaintEvent.kind).where(
            ComplaintEvent.complaint_id == own.id, ComplaintEvent.actor.like("staff:%")))).all()
        messages = (await session.scalars(select(ConsumerMessage))).all()
    assert record.status == "resolved" and record.outcome == "已退还年费300元，并向您致歉。"
    assert list(kinds) == ["claimed", "reply", "resolved"]
    assert len(messages) == 2
