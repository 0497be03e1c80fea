"""A TensorBoard server on loopback and the system's headless Chromium, for tests and screenshots.

TensorBoard binds a free port itself (`--port 0`) and prints its URL, so there is no race for a
port. Chromium is Debian's (`/usr/bin/chromium`), driven by Playwright; the flags keep it from
reaching out to the network (which this machine refuses) and give it a fresh profile.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright is missing (pip install -e '.[dev]')"
    return None


@contextlib.contextmanager
def tensorboard(logdir: Path, timeout: float = 60) -> Iterator[str]:
    """Serves `logdir` with TensorBoard on 127.0.0.1 and yields its URL (ending with `/`)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", "0", "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    found: list[str] = []
    lines: list[str] = []

    def read() -> None:  # keeps draining stderr so that the server never blocks on it
        for line in server.stderr:
            lines.append(line)
            if not found and (match := re.search(r" at (http://\S+/) ", line)):
                found.append(match.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for _ in range(int(timeout * 10)):
            if found or server.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert found, f"TensorBoard did not start: {''.join(lines)}"
        yield found[0]
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[Any]:
    """Yields a page of a headless Chromium with a fresh profile (removed afterwards)."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="regfw-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height},
            )
            try:
                yield context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_hparams_table(page: Any, url: str, timeout_ms: int = 60_000) -> None:
    """Opens TensorBoard's HPARAMS tab at `url` and waits for the trials table."""
    page.goto(url + "#hparams")
    page.locator("vaadin-grid-cell-content", has_text="Trial ID").first.wait_for(timeout=timeout_ms)


def open_custom_scalars(page: Any, url: str, timeout_ms: int = 60_000) -> None:
    """Opens TensorBoard's CUSTOM SCALARS tab at `url` and waits for its first chart's plot."""
    page.goto(url + "#custom_scalars")
    page.get_by_text("loss = data_loss + penalty/total").first.wait_for(timeout=timeout_ms)
