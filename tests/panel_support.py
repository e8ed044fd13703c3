"""The panel as a user meets it: `appliancekit panel` started as a process, driven by Debian's
chromium through chromium-driver (selenium), headless, with a screenshot of every page the
tests look at (kept under the pytest base directory: panel-screenshots/)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "panel-test-password"

needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="chromium and chromium-driver are not installed (scripts/setup-host.sh)",
)


class PanelServer:
    """`appliancekit panel --port 0` in its own process; its stderr is the server log."""

    def __init__(self, root: Path, images: Path, state: Path, work: Path, **options: Path) -> None:
        self.log_path = work / "panel.log"
        password = work / "password"
        password.write_text(PASSWORD + "\n")
        args = [
            sys.executable, "-m", "appliancekit", "panel", "--port", "0",
            "--images", str(images), "--state", str(state), "--password-file", str(password),
        ]  # fmt: skip
        for name, value in options.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env["APPLIANCEKIT_HOME"] = str(root)
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=root
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"(http://\S+/)", line)
        if not match:
            self.stop()
            raise AssertionError(f"panel did not start: {line!r}\n{self.log_path.read_text()}")
        self.url = match.group(1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()


def is_navigation_race(error: Exception) -> bool:
    """chromedriver's answer to a command that a page load overtook."""
    message = str(error)
    return "aborted by navigation" in message or "Not attached to an active page" in message


class Browser:
    """One headless chromium for a test module, with numbered screenshots."""

    def __init__(self, shots: Path, downloads: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        # everything is local: selenium must not look for or fetch a driver or browser
        os.environ.setdefault("SE_AVOID_STATS", "true")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",  # tests run as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,1800",
        ):
            options.add_argument(arg)
        options.add_experimental_option(
            "prefs",
            {"download.default_directory": str(downloads), "download.prompt_for_download": False},
        )
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        self.shots = shots
        self.downloads = downloads
        self.count = 0
        self.pages: list[str] = []  # every page source seen, for the secret checks

    def screenshot(self, name: str) -> Path:
        """The page as it is, once it has loaded. A click on a form's button starts a
        navigation that chromedriver may not have seen yet: a screenshot then fails with
        "aborted by navigation", so it is taken again once the new page has loaded."""
        from selenium.common.exceptions import WebDriverException

        self.count += 1
        path = self.shots / f"{self.count:02d}-{name}.png"
        for attempt in range(1, 6):
            try:
                self.wait_loaded(f"page for {name}")
                self.driver.save_screenshot(str(path))
                page = self.driver.page_source
                break
            except WebDriverException as error:
                if attempt == 5 or not is_navigation_race(error):
                    raise
                time.sleep(0.5)
        self.pages.append(page)
        return path

    def get(self, url: str, name: str) -> None:
        self.driver.get(url)
        self.screenshot(name)

    def by_id(self, element_id: str) -> object:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def fill(self, element_id: str, value: str) -> None:
        element = self.by_id(element_id)
        element.clear()  # type: ignore[attr-defined]
        element.send_keys(value)  # type: ignore[attr-defined]

    def click(self, element_id: str) -> None:
        """Click a link or a form's button, and wait for the page it leads to. Every click
        in the panel navigates (its forms post and redirect); without the wait, the next
        command can run on the page that is going away: chromedriver then finds nothing
        (a login, then "cloud-example" not found) or aborts a screenshot."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions

        leaving = self.driver.find_element(By.TAG_NAME, "html")
        self.by_id(element_id).click()  # type: ignore[attr-defined]
        self.wait(expected_conditions.staleness_of(leaving), 60, f"{element_id} led nowhere")
        self.wait_loaded(f"the page after {element_id}")

    def wait_loaded(self, what: str) -> None:
        """Wait until the current page has finished loading."""
        self.wait(
            lambda d: d.execute_script("return document.readyState") == "complete",  # type: ignore[attr-defined]
            60,
            f"{what} never finished loading",
        )

    def wait(self, condition: Callable[[object], object], timeout: float, what: str) -> object:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(condition, what)

    def log_in(self, url: str, password: str = PASSWORD) -> None:
        self.get(url, "login")
        self.fill("password", password)
        self.click("login-button")

    def wait_for_job(self, timeout: float, name: str) -> dict[str, str]:
        """On a job page: wait until the page (polling the job's JSON) shows it finished."""
        self.wait(
            lambda d: self.by_id("job").get_attribute("data-done") == "true",  # type: ignore[attr-defined]
            timeout,
            f"job page never showed the end of {name}",
        )
        self.screenshot(name)
        return {
            "state": self.by_id("job-state").text,  # type: ignore[attr-defined]
            "summary": self.by_id("job-summary").text,  # type: ignore[attr-defined]
        }

    def download(self, link_text_part: str, timeout: float = 120) -> Path:
        from selenium.webdriver.common.by import By

        before = set(self.downloads.iterdir())
        self.driver.find_element(By.PARTIAL_LINK_TEXT, link_text_part).click()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = [
                p
                for p in set(self.downloads.iterdir()) - before
                if not p.name.endswith((".crdownload", ".tmp")) and not p.name.startswith(".")
            ]
            if new and not any(p.name.endswith(".crdownload") for p in self.downloads.iterdir()):
                return new[0]
            time.sleep(0.3)
        raise AssertionError(f"no download in {self.downloads}: {list(self.downloads.iterdir())}")

    def quit(self) -> None:
        self.driver.quit()


def unpack_card(packed: Path, dest: Path) -> Path:
    """A downloaded NAME.img.zst as a raw card image."""
    import zstandard

    with open(packed, "rb") as src, open(dest, "wb") as out:
        zstandard.ZstdDecompressor().copy_stream(src, out)
    return dest


def copy_project(dest: Path, repo: Path) -> Path:
    """A project with the repository's recipes and boards and no clouds (tests add theirs)."""
    dest.mkdir(parents=True)
    for name in ("recipes", "boards"):
        (dest / name).symlink_to(repo / name)
    (dest / "clouds").mkdir()
    return dest
