"""A small WebDriver BiDi client, enough to drive Debian's Firefox ESR through the explorer.

Playwright reaches a stock Firefox only through WebDriver BiDi (``channel="moz-firefox"``) and its
current releases send commands that Firefox ESR 140 does not know (``network.addDataCollector``), so
the Firefox test speaks the W3C protocol itself (https://w3c.github.io/webdriver-bidi/): Firefox's
remote agent on a free loopback port, one ``session.new``, then ``browsingContext.navigate``,
``script.evaluate`` (to read the page and to poll for what the test waits for), ``input.setFiles``
(the upload) and ``browsingContext.captureScreenshot``. Every request the page makes is collected
from ``network.beforeRequestSent`` events.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

PREFS = {  # a quiet, offline profile: no updates, no telemetry, no first-run pages
    "app.update.enabled": False, "browser.shell.checkDefaultBrowser": False, "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False, "browser.startup.homepage_override.mstone": "ignore",
    "network.captive-portal-service.enabled": False, "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False, "extensions.update.enabled": False,
}


class Firefox:
    """Firefox started headless with its BiDi agent; one browsing context; ``close()`` ends it."""

    def __init__(self, executable: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items()))
        self.proc = subprocess.Popen([executable, "--headless", "--no-remote", "--remote-debugging-port=0", "--profile", str(profile),
                                      f"--width={width}", f"--height={height}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        said = []
        for line in self.proc.stderr:
            said.append(line)
            found = re.search(r"WebDriver BiDi listening on (ws://\S+)", line)
            if found:
                break
        else:
            raise RuntimeError(f"Firefox did not start its BiDi agent: {''.join(said)!r}")
        self._stack = contextlib.ExitStack()  # websockets ≥ 17 wants its connection used as a context
        self.ws = self._stack.enter_context(connect(found.group(1).rstrip("/") + "/session", max_size=None))
        self.next_id, self.requests = 0, []
        self.send("session.new", {"capabilities": {}})
        self.send("session.subscribe", {"events": ["network.beforeRequestSent"]})
        self.context = self.send("browsingContext.getTree", {})["contexts"][0]["context"]
        self.send("browsingContext.setViewport", {"context": self.context, "viewport": {"width": width, "height": height}})

    def send(self, method: str, params: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=timeout))
            if message.get("method") == "network.beforeRequestSent":
                self.requests.append(message["params"]["request"]["url"])
            elif message.get("id") == self.next_id:
                if message.get("type") == "error":
                    raise RuntimeError(f"{method}: {message.get('error')}: {message.get('message')}")
                return message["result"]

    def goto(self, url: str) -> None:
        self.send("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.send("script.evaluate", {"expression": expression, "target": {"context": self.context}, "awaitPromise": True,
                                               "resultOwnership": "none"})
        if result.get("type") == "exception":
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return _value(result["result"])

    def wait(self, condition: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while not self.js(f"!!({condition})"):
            if time.monotonic() > end:
                raise TimeoutError(f"the page never had: {condition}")
            time.sleep(0.1)

    def text(self, selector: str) -> str:
        return self.js(f"document.querySelector({json.dumps(selector)}).innerText")

    def click(self, selector: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).click()")

    def set_files(self, selector: str, *paths: Path) -> None:
        nodes = self.send("browsingContext.locateNodes", {"context": self.context, "locator": {"type": "css", "value": selector}})["nodes"]
        self.send("input.setFiles", {"context": self.context, "element": {"sharedId": nodes[0]["sharedId"]},
                                     "files": [str(p) for p in paths]})

    def screenshot(self, path: Path) -> None:
        data = self.send("browsingContext.captureScreenshot", {"context": self.context, "origin": "document"})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("browser.close", {}, timeout=10)
        except Exception:  # the agent may go before it answers
            pass
        self._stack.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _value(remote: dict[str, Any]) -> Any:
    """A BiDi RemoteValue as Python: primitives, and arrays of them."""
    kind = remote.get("type")
    if kind in ("string", "number", "boolean"):
        return remote["value"]
    if kind in ("undefined", "null"):
        return None
    if kind == "array":
        return [_value(v) for v in remote.get("value", [])]
    return remote
