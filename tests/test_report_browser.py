"""The HTML report in a real browser: Debian's Chromium driven headless by Selenium, pages opened from file://.

scripts/setup.sh installs chromium and chromium-driver; without them these tests are skipped (with the reason)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from avdet.pipeline.report import Meta, VideoReport, write_report, write_video_page
from avdet.pipeline.types import Event
from conftest import make_clip

pytestmark = pytest.mark.slow  # a real headless Chromium per module: .ci/run runs them, the inner loop does not

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[dev]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("chromium and chromedriver not installed (scripts/setup.sh installs them)", allow_module_level=True)

CLASSES = ["dog barking", "car horn", "people talking <b>", "engine"]
EVENTS = [  # one video's events.json: several per lane, overlapping ones, one class without ground truth
    Event("dog barking", 0, 0.2, 1.5, 0.92),
    Event("dog barking", 0, 1.0, 2.2, 0.41),
    Event("dog barking", 0, 3.1, 3.9, 0.15),
    Event("car horn", 1, 1.6, 2.8, 0.66),
    Event("car horn", 1, 2.9, 3.6, 0.08),
    Event("engine", 3, 0.5, 3.5, 0.55),
]
TRUTH = [Event("dog barking", 0, 0.3, 1.6, 1.0), Event("people talking <b>", 2, 2.0, 3.0, 1.0)]
OPERATING_POINT = {
    "mode": "calibrated",
    "thresholds": {c: t for c, t in zip(CLASSES, (0.3, 0.3, 0.5, 0.1), strict=False)},
    "overlap_iou": 0.0,
    "split": "validation",
}


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 s H.264/AAC clip (what Debian's Chromium plays; VP9/Opus .webm plays too)."""
    return make_clip(tmp_path_factory.mktemp("media") / "clip one.mp4", duration=4.0)


@pytest.fixture()
def page(tmp_path: Path, clip: Path, browser):
    """The report of `clip` (events.json -> page), opened; the page's console is checked for errors afterwards."""
    events_json = tmp_path / "events.json"
    from avdet.pipeline.io.writers import read_events_file, write_events_file

    write_events_file(
        events_json, EVENTS, video="clip one", duration=4.0, model="loco", operating_point=OPERATING_POINT
    )
    video, duration, events = read_events_file(events_json)
    report = VideoReport(video, duration, events, TRUTH, clip, "loco", OPERATING_POINT)
    html = tmp_path / "out" / "clip.html"
    html.parent.mkdir()
    write_video_page(html, report, Meta(command="avdet report events.json", checkpoint="run/best.ckpt"))
    browser.get(html.as_uri())
    browser.get_log("browser")  # start clean
    _wait(browser, "return document.getElementById('video').readyState >= 1")
    yield browser, json.loads(events_json.read_text())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def _wait(browser, script: str, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def _bars(browser) -> list:
    return browser.find_elements(By.CSS_SELECTOR, "#lanes rect.det")


def test_lanes_and_bars_follow_events_json(page) -> None:
    browser, doc = page
    events = doc["events"]
    lanes = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#labels text")]
    assert lanes == CLASSES  # a lane per class with events or ground truth, by label id
    bars = _bars(browser)
    assert len(bars) == len(events)
    px = browser.execute_script("return window.avdetReport.state.pxPerS")
    for bar in bars:
        e = events[int(bar.get_attribute("data-i"))]
        assert float(bar.get_attribute("x")) == pytest.approx(4 + e["start"] * px, abs=0.01)
        assert float(bar.get_attribute("width")) == pytest.approx(max((e["end"] - e["start"]) * px, 2), abs=0.01)
    spans = []  # each lane's bars (detections and ground truth) are its class's, lanes top to bottom by label id
    for lane in browser.find_elements(By.CSS_SELECTOR, "#lanes g.lane"):
        k = int(lane.get_attribute("data-k"))
        ids = [int(b.get_attribute("data-i")) for b in lane.find_elements(By.CSS_SELECTOR, "rect.det")]
        assert sorted(ids) == [i for i, e in enumerate(events) if e["label_id"] == k]
        truth = lane.find_elements(By.CSS_SELECTOR, "rect.gt")
        assert len(truth) == sum(g.label_id == k for g in TRUTH)
        ys = [float(r.get_attribute("y")) for r in lane.find_elements(By.TAG_NAME, "rect")]
        spans.append((k, min(ys), max(ys)))
    assert [k for k, _, _ in spans] == [0, 1, 2, 3]
    assert all(a[2] < b[1] for a, b in zip(spans, spans[1:], strict=False))  # lanes do not overlap
    assert len(browser.find_elements(By.CSS_SELECTOR, "#lanes rect.gt")) == len(TRUTH)
    assert "2 true events" in browser.find_element(By.ID, "meta").text
    assert "run/best.ckpt" in browser.find_element(By.ID, "meta").text


def test_click_an_event_seeks_the_video(page) -> None:
    browser, doc = page
    target = max(range(len(doc["events"])), key=lambda i: doc["events"][i]["start"] * (doc["events"][i]["score"] > 0.1))
    bar = browser.find_element(By.CSS_SELECTOR, f'#lanes rect.det[data-i="{target}"]')
    ActionChains(browser).move_to_element(bar).click().perform()
    start = doc["events"][target]["start"]
    assert _wait(browser, f"return Math.abs(document.getElementById('video').currentTime - {start}) < 0.01")
    now = browser.find_element(By.ID, "now").text
    assert doc["events"][target]["label"] in now  # the current events beside the player
    assert "on" in bar.get_attribute("class")


def test_score_slider_hides_detections_below_it(page) -> None:
    browser, doc = page
    scores = [e["score"] for e in doc["events"]]
    for value in (0.0, 0.3, 0.6, 0.95):
        browser.execute_script(
            "const s = document.getElementById('min'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('input', {bubbles: true}));",
            value,
        )
        shown = sum(bar.is_displayed() for bar in _bars(browser))
        assert shown == sum(s >= value for s in scores), value
        assert browser.find_element(By.ID, "shown").text == f"{shown} of {len(scores)} shown"
    ticks = browser.find_elements(By.CSS_SELECTOR, "#ticks i")  # the calibrated thresholds, one mark per value
    assert len(ticks) == len(set(OPERATING_POINT["thresholds"].values()))


def test_hover_shows_tiou_and_match(page) -> None:
    browser, doc = page
    first = next(i for i, e in enumerate(doc["events"]) if e["label"] == "dog barking" and e["score"] > 0.9)
    bar = browser.find_element(By.CSS_SELECTOR, f'#lanes rect.det[data-i="{first}"]')
    ActionChains(browser).move_to_element(bar).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed()
    text = tip.text
    assert "dog barking" in text and "score 0.920" in text and "matched at 0.5" in text
    assert "tIoU 0.86" in text  # [0.2, 1.5] against the truth [0.3, 1.6]: 1.2 / 1.4


def test_class_filter_and_keyboard(page) -> None:
    browser, doc = page
    box = browser.find_element(By.CSS_SELECTOR, '#classes input[data-k="1"]')
    box.click()
    assert [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#labels text")] == [
        c for c in CLASSES if c != "car horn"
    ]
    assert len(_bars(browser)) == sum(e["label_id"] != 1 for e in doc["events"])
    browser.execute_script("document.activeElement.blur()")  # keys to the page, not the checkbox
    starts = sorted(e["start"] for e in doc["events"] if e["label_id"] != 1)
    browser.execute_script("window.avdetReport.seek(0)")
    for want in starts[:3]:
        ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
        assert _wait(browser, f"return Math.abs(window.avdetReport.now() - {want}) < 0.01"), want
    ActionChains(browser).send_keys(Keys.ARROW_LEFT).perform()
    assert _wait(browser, f"return Math.abs(window.avdetReport.now() - {starts[1]}) < 0.01")
    ActionChains(browser).send_keys(" ").perform()  # space plays
    assert _wait(browser, "return !document.getElementById('video').paused")
    ActionChains(browser).send_keys(" ").perform()
    assert _wait(browser, "return document.getElementById('video').paused")


def test_unplayable_video_keeps_the_timeline(tmp_path: Path, browser) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    html = tmp_path / "r.html"
    write_video_page(html, VideoReport("broken", 4.0, EVENTS, None, bad), Meta())
    browser.get(html.as_uri())
    notice = browser.find_element(By.ID, "notice")
    _wait(browser, "return document.getElementById('notice').style.display === 'block'")
    assert "cannot play" in notice.text and "broken.mp4" in notice.text
    bar = browser.find_element(By.CSS_SELECTOR, '#lanes rect.det[data-i="2"]')  # the page's events are by start
    ActionChains(browser).move_to_element(bar).click().perform()
    start = sorted(e.start for e in EVENTS)[2]
    assert _wait(browser, f"return Math.abs(window.avdetReport.now() - {start}) < 0.01")
    assert not browser.find_element(By.ID, "scorebox").is_displayed()  # no ground truth: no scores, no tIoU
    assert "score" in browser.find_element(By.ID, "tip").text and "tIoU" not in browser.find_element(By.ID, "tip").text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "broken.mp4" not in e["message"]]
    assert errors == []


def test_index_page_links_each_video(tmp_path: Path, clip: Path, browser) -> None:
    reports = [
        VideoReport("clip one", 4.0, EVENTS, TRUTH, clip, "loco", OPERATING_POINT),
        VideoReport("clip two", 4.0, EVENTS[:2], TRUTH[:1], clip, "loco", OPERATING_POINT),
    ]
    index = write_report(tmp_path / "split", reports, Meta(checkpoint="run/best.ckpt"))
    browser.get(index.as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#table tbody tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    # clip one: 1 hit of 6 events, 2 true: P 16.7 %, R 50 %, F1 2/8; clip two: 1 of 2, 1 true: 50 %, 100 %, 66.7 %
    assert [c[:4] for c in cells] == [["clip one", "4.0", "6", "2"], ["clip two", "4.0", "2", "1"]]
    assert [c[4:] for c in cells] == [["16.7%", "50.0%", "25.0%"], ["50.0%", "100.0%", "66.7%"]]
    browser.find_element(By.XPATH, "//th[text()='F1']").click()  # sort: worst first
    assert browser.find_element(By.CSS_SELECTOR, "#table tbody tr td a").text == "clip one"
    browser.find_element(By.LINK_TEXT, "clip two").click()
    assert _wait(browser, "return document.getElementById('title').textContent") == "clip two"
    browser.find_element(By.ID, "prev").click()
    assert _wait(browser, "return document.getElementById('title').textContent === 'clip one'")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


@pytest.mark.slow
def test_ten_minutes_with_hundreds_of_events_stay_smooth(tmp_path: Path, browser) -> None:
    """A 10-minute video with 300 events in 12 classes: the page builds in well under a second, a playhead step
    (what each animation frame does) costs well under a millisecond, zooming keeps bars readable."""
    import random

    clip = tmp_path / "long.mp4"
    subprocess.run(
        ["ffmpeg", "-y", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=128x72:rate=5:d=600"]
        + ["-f", "lavfi", "-i", "sine=d=600", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        + ["-c:a", "aac", "-b:a", "32k", str(clip)],
        check=True,
    )
    rng = random.Random(0)
    events = []
    for _ in range(300):
        k, start = rng.randrange(12), rng.uniform(0, 590)
        events.append(Event(f"class {k}", k, start, start + rng.uniform(1, 10), rng.random()))
    truth = [
        Event(f"class {k}", k, s, s + 5, 1.0) for k, s in ((rng.randrange(12), rng.uniform(0, 590)) for _ in range(120))
    ]
    html = tmp_path / "long.html"
    write_video_page(html, VideoReport("long", 600.0, events, truth, clip), Meta())
    t0 = time.monotonic()
    browser.get(html.as_uri())
    load_s = time.monotonic() - t0
    _wait(browser, "return document.getElementById('video').readyState >= 1")
    timing = browser.execute_script(
        """const r = window.avdetReport, out = {};
        let t = performance.now(); r.build(); out.build_ms = performance.now() - t;
        t = performance.now();
        r.state.playable = false;  // our own clock: time the page's work, not the decoder's seeks
        for (let i = 0; i < 1200; i++) { r.state.t = i / 2; r.tick(); }
        out.step_ms = (performance.now() - t) / 1200;
        r.state.playable = true;
        out.bars = document.querySelectorAll('#lanes rect.det').length;
        out.nodes = document.querySelectorAll('#lanes *').length;
        return out;"""
    )
    print(f"10-minute page: load {load_s:.2f} s, build {timing['build_ms']:.1f} ms, step {timing['step_ms']:.3f} ms")
    assert timing["bars"] == 300
    assert timing["build_ms"] < 500 and timing["step_ms"] < 1.0
    nodes = timing["nodes"]
    browser.execute_script("window.avdetReport.seek(300)")
    assert browser.execute_script("return document.querySelectorAll('#lanes *').length") == nodes  # no DOM per step
    browser.find_element(By.ID, "zoomin").click()
    for _ in range(3):
        browser.find_element(By.ID, "zoomin").click()
    widths = [float(b.get_attribute("width")) for b in _bars(browser)]
    assert min(widths) >= 10  # zoomed 16x: a 1 s event is tens of pixels wide
    scroller = browser.execute_script("return document.getElementById('scroller').scrollLeft")
    assert scroller > 0  # the view follows the playhead at 5:00
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
