"""The chat page of a running `prima serve` (base URL argv[1]) in headless
Chromium: types a question, sends it, waits for the streamed reply and the
cluster view, and saves a screenshot to argv[2]."""

import sys

from playwright.sync_api import sync_playwright

base, shot = sys.argv[1], sys.argv[2]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    page.goto(base + "/")
    page.wait_for_selector("body[data-cluster=shown]", timeout=15000)
    page.fill("#text", "What is the capital of France?")
    page.click("#send")
    page.wait_for_selector("body[data-state=done]", timeout=60000)
    reply = page.inner_text(".msg.assistant")
    assert reply.strip(), "the reply is empty"
    devices = page.inner_text("#devices tbody")
    assert "0-29" in devices, devices
    page.wait_for_function("document.querySelector('#stats').innerText.includes('requests')")
    page.screenshot(path=shot)
    browser.close()
    print(f"ok: reply {reply!r}; devices {devices!r}")
