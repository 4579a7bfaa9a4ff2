"""The chat page in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import create_app

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
async def page(chromium_path, aiohttp_server, config, knowledge_index):
    playwright_api = pytest.importorskip("playwright.async_api")
    server = await aiohttp_server(create_app(config, knowledge_index))
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS
        )
        context = await browser.new_context(viewport={"width": 390, "height": 844})
        page = await context.new_page()
        await page.goto(str(server.make_url("/")))
        yield page
        await browser.close()


async def test_typing_a_question_shows_the_answer(page):
    await page.wait_for_selector(".msg.bot .buttons button")
    await page.fill("#text", "银行卡被盗刷了怎么办")
    await page.click("#send")
    answer = page.locator(".msg.bot", has_text="【")
    await answer.first.wait_for(timeout=15000)
    assert "卡" in await answer.first.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "chat-page.png"), full_page=True)


async def test_buttons_are_real_buttons_that_answer(page):
    await page.get_by_role("button", name="使用帮助").click()
    await page.locator(".msg.bot", has_text="使用方法").wait_for(timeout=15000)
    text_size = await page.eval_on_selector(
        ".msg.bot", "e => parseFloat(getComputedStyle(e).fontSize)"
    )
    assert text_size >= 17  # large type for elderly readers
