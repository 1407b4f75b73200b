#!/usr/bin/env python3
"""Drives the hub's dashboard (/ui) in headless Chromium, as an operator would.

usage: ui-check.py HUB_URL ADMIN_TOKEN WORKER_TO_DRAIN [SCREENSHOT.png]

Signs in with the token, waits for the live worker list, clicks "Drain" on the given
worker and waits until the page shows it draining, then opens that worker's engine log
tail and waits for lines. With CARAVAN_UI_KEY=NAME, also reads that managed key's row in
"Keys and usage" (requests, tokens, budget bar) and revokes it with its button. With
CARAVAN_UI_MODEL="NAME SOURCE", adds that hub-managed model with the "Models from the hub"
form, waits for its replica to be downloaded, reads its estimate, and removes it. Prints JSON:
{"workers": [...], "drained_in_page": true, "log_lines": N[, "key": {...}, "revoked_in_page": true]
[, "model": {...}, "model_removed_in_page": true]}. Needs Debian's chromium and chromium-driver
and PyPI's selenium (no browser download: selenium-manager is kept offline)."""
import json
import os
import sys
import time

os.environ["SE_AVOID_STATS"] = "true"
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

url, token, target = sys.argv[1], sys.argv[2], sys.argv[3]
screenshot = sys.argv[4] if len(sys.argv) > 4 else None

options = webdriver.ChromeOptions()
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900"]:
    options.add_argument(flag)
options.binary_location = next(p for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] if os.path.exists(p))
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    wait = WebDriverWait(driver, 20)
    driver.get(url + "/ui")
    wait.until(EC.presence_of_element_located((By.ID, "token"))).send_keys(token)
    driver.find_element(By.ID, "login-button").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.worker")) >= 2)
    # The page re-renders the workers on every snapshot (once a second), so elements are read
    # and clicked inside one script run, never held across calls (they may be gone by then).
    workers = driver.execute_script(
        "return Array.from(document.querySelectorAll('article.worker')).map(e => e.dataset.worker).sort()")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "article.worker svg.spark"))
    if screenshot:
        time.sleep(30)  # half a minute of snapshots, so the sparklines in the picture have points

    def click(selector):
        return driver.execute_script(
            "const b = document.querySelector(arguments[0]); if (b && !b.disabled) { b.click(); return true } return false",
            selector)

    wait.until(lambda d: click(f'button[data-action="drain"][data-worker="{target}"]'))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'article.worker.draining[data-worker="{target}"]'))
    if screenshot:
        driver.save_screenshot(screenshot)
    # The engine log tail: the page follows the worker's log endpoint through the hub.
    wait.until(lambda d: click(f'article.worker[data-worker="{target}"] button[data-action="logs"]'))
    wait.until(lambda d: d.find_element(By.ID, "logs-text").text.strip() != "")
    log_lines = len(driver.find_element(By.ID, "logs-text").text.strip().splitlines())
    driver.find_element(By.ID, "logs-close").click()
    result = {"workers": workers, "drained_in_page": True, "log_lines": log_lines}
    key = os.environ.get("CARAVAN_UI_KEY")
    if key:
        row = f'#keys tr[data-key="{key}"]'
        wait.until(lambda d: d.execute_script(f"const r = document.querySelector('{row} td.requests'); return r && r.textContent !== '0'"))
        result["key"] = driver.execute_script(
            f"const r = document.querySelector('{row}'); const fill = r.querySelector('.budget .fill');"
            "return {requests: Number(r.querySelector('td.requests').textContent), tokens: Number(r.querySelector('td.tokens').textContent),"
            " status: r.dataset.status, budget_bar: fill ? fill.style.width : null}")
        wait.until(lambda d: click(f'{row} button[data-action="revoke"]'))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'{row}[data-status="revoked"]'))
        result["revoked_in_page"] = True
    model = os.environ.get("CARAVAN_UI_MODEL")
    if model:
        name, source = model.split(" ", 1)
        driver.find_element(By.ID, "model-name").send_keys(name)
        driver.find_element(By.ID, "model-source").send_keys(source)
        driver.find_element(By.ID, "model-add").click()
        row = f'#models tr[data-model="{name}"]'
        wait.until(lambda d: d.execute_script(
            f"const s = document.querySelector('{row} .replica .state'); return s && ['not-loaded', 'ready'].includes(s.textContent)"))
        result["model"] = driver.execute_script(
            f"const r = document.querySelector('{row}'); return {{estimate: r.querySelector('td.estimate').textContent,"
            " replicas: Array.from(r.querySelectorAll('.replica')).map(e => e.dataset.worker), error: document.getElementById('model-error').textContent}")
        wait.until(lambda d: click(f'{row} button[data-action="remove-model"]'))
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, row))
        result["model_removed_in_page"] = True
    print(json.dumps(result))
finally:
    driver.quit()
