"""`serve` in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium): the WebRTC view
really decodes frames (getStats' framesDecoded rises), the MJPEG view really changes, the statistics update
live, a view switch reaches the stream, and a stream name cannot inject markup into the index."""
from __future__ import annotations

import base64
import shutil
import tempfile
import time

import pytest

pytest.importorskip("fastapi", reason="serve needs the [serve] extra (fastapi, uvicorn, prometheus-client)")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (the [test] extra)")

from test_serve import SYN, Client, serve_config  # noqa: E402

from segformer3d_rt.serve.server import Server  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def served():
    srv = Server(serve_config(["cam=" + SYN.format(fps=10)])).start()
    Client(srv.url).wait("cam", lambda s: s["frames"]["out"] >= 3)
    yield srv
    srv.stop()


def _until(fn, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


FRAMES_DECODED = """
const done = arguments[arguments.length - 1];
const pc = window.viewer && window.viewer.pc;
if (!pc) { done(-1); return; }
pc.getStats().then(stats => {
  let n = 0;
  stats.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') n = r.framesDecoded || 0; });
  done(n);
});
"""


def test_webrtc_view_decodes_frames_and_stats_update(browser, served):
    browser.get(served.url + "view/cam")
    _until(lambda: browser.execute_script("return window.viewer.mode"), what="a view mode")
    assert browser.execute_script("return window.viewer.mode") == "webrtc", \
        browser.find_element("id", "mode").text
    first = _until(lambda: (n := browser.execute_async_script(FRAMES_DECODED)) > 0 and n, what="decoded frames")
    time.sleep(2.0)
    later = browser.execute_async_script(FRAMES_DECODED)
    assert later > first + 5, (first, later)  # frames keep arriving and decoding
    size = browser.execute_script("const v = document.getElementById('video'); return [v.videoWidth, v.videoHeight]")
    assert size == [256, 128]
    # the statistics are pushed: the page's copy advances with the stream
    u0 = browser.execute_script("return window.viewer.updates")
    out0 = browser.execute_script("return window.viewer.stats.frames_out")
    time.sleep(1.5)
    assert browser.execute_script("return window.viewer.updates") > u0
    assert browser.execute_script("return window.viewer.stats.frames_out") > out0
    assert "FPS" in browser.find_element("id", "summary").text
    assert "capture to output" in browser.find_element("id", "stats").text


def test_mjpeg_view_changes_and_view_switch_reaches_the_stream(browser, served):
    browser.get(served.url + "view/cam?mode=mjpeg")
    _until(lambda: browser.execute_script("return window.viewer.mode") == "mjpeg", what="the MJPEG view")
    img = browser.find_element("id", "mjpeg")
    _until(lambda: browser.execute_script("return arguments[0].naturalWidth", img) > 0, what="the first frame")
    shots = {base64.b64encode(img.screenshot_as_png)}
    _until(lambda: shots.add(base64.b64encode(img.screenshot_as_png)) or len(shots) >= 3, what="the image to change")
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "view")).select_by_value("side-by-side")
    c = Client(served.url)
    _until(lambda: c.stream("cam")["view"] == "side-by-side", what="the view switch")
    _until(lambda: browser.execute_script("return arguments[0].naturalWidth", img) == 512, what="a wider frame")
    c.call("PATCH", "/api/streams/cam", {"view": "overlay"})


def test_index_lists_streams_and_never_runs_their_names(browser, served):
    c = Client(served.url)
    status, reply = c.call("POST", "/api/streams", {"name": "<img src=x onerror=alert(1)>", "source": "synthetic:"})
    assert status == 400  # such a name never exists; the page still inserts names as text only
    assert c.call("POST", "/api/streams", {"name": "two", "source": SYN.format(fps=5)})[0] == 201
    try:
        browser.get(served.url)
        cards = _until(lambda: len(browser.find_elements("css selector", ".card")) == 2
                       and browser.find_elements("css selector", ".card .name"), what="two cards")
        assert sorted(e.text for e in cards) == ["cam", "two"]
        assert browser.execute_script("return document.querySelectorAll('.card img').length") == 2
    finally:
        c.call("DELETE", "/api/streams/two")


@pytest.mark.parametrize("mode", ["webrtc", "mjpeg"])
def test_glass_to_glass_latency_is_read_back_in_the_page(browser, mode):
    srv = Server(serve_config(["g=" + SYN.format(fps=10)], stamp=True)).start()
    try:
        Client(srv.url).wait("g", lambda s: s["frames"]["out"] >= 3)
        browser.get(srv.url + f"view/g?g2g=1&mode={mode}")
        lags = _until(lambda: (v := browser.execute_script("return window.viewer.g2g")) and len(v) >= 10 and v,
                      what="stamps read back")
        assert browser.execute_script("return window.viewer.mode") == mode
        # every stamp read is a real, recent capture time: between the frame's own capture-to-output latency and
        # a few seconds (a misread bit would be hours or days off)
        assert all(0 <= v < 3000 for v in lags), lags
    finally:
        srv.stop()
