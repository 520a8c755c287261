#!/usr/bin/env python3
"""The web page in a real browser (Debian's chromium driven by pip's playwright), against a
running `adaptd run` (tests/web.rs starts it and checks the results through the CLI and MQTT).

    tests/web/browser.py --url http://127.0.0.1:PORT --camera front --shots DIR

What it does, in order, each step failing with a message that says what was expected:
1. Live: the camera's tile shows a frame with boxes (DOM) and the frame is not blank (its
   pixels, read back through a canvas, vary).
2. Events: an event of a person with a snapshot is named `alice` on the page; the reply shows.
3. Samples: a file that is not a picture is uploaded; its error shows on the page.
4. Training: "train now", a new head appears in service; then "roll back" to head 1.
   Then a sample is relabeled and another deleted, and the named event is dropped.
5. Access: a POST without a session, and one without the CSRF token, are refused (403); the
   same with both goes through.
6. /metrics parses with prometheus_client's OpenMetrics parser (strict: the format we
   declare), and frames_processed moves.
Screenshots of every page go to --shots (docs/screenshots when refreshing the docs).
Prints one JSON line with what the Rust side checks next.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright
from prometheus_client.openmetrics.parser import text_string_to_metric_families

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# Generous: a 2-core CI machine runs the detector at a few frames a second.
WAIT_MS = 60_000


def fail(msg):
    print(f"browser.py: {msg}", file=sys.stderr)
    sys.exit(1)


def post(url, body=b"{}", headers=None):
    """(status, parsed JSON body) of a POST."""
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read(), r.headers


def wait_js(page, fn, arg=None, timeout_ms=WAIT_MS, what="the page to get there"):
    """Polls `fn(arg)` in the page until it is truthy. (Playwright's wait_for_function
    evaluates a string, which the page's Content-Security-Policy rightly forbids.)"""
    deadline = time.time() + timeout_ms / 1000
    while time.time() < deadline:
        if page.evaluate(fn, arg):
            return
        page.wait_for_timeout(200)
    fail(f"timed out waiting for {what}")


def live(page, camera, shots):
    tile = f'div.camera[data-camera="{camera}"]'
    page.goto(ARGS.url + "/#live")
    page.wait_for_selector(f"{tile} div.box", timeout=WAIT_MS)
    boxes = page.eval_on_selector_all(
        f"{tile} div.box", "els => els.map(e => [e.dataset.label, e.textContent])")
    if not any(label == "person" for label, _ in boxes):
        fail(f"no person box on the live tile: {boxes}")
    wait_js(page, "sel => { const i = document.querySelector(sel); "
            "return i && i.complete && i.naturalWidth > 0; }", f"{tile} img.frame",
            what="the live frame to load")
    spread = page.eval_on_selector(f"{tile} img.frame", """img => {
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data;
        let min = 255, max = 0;
        for (let i = 0; i < d.length; i += 4 * 97) { min = Math.min(min, d[i]); max = Math.max(max, d[i]); }
        return max - min; }""")
    if spread < 30:
        fail(f"the live frame looks blank (red channel spread {spread})")
    for s in ("fps", "latency", "conn"):
        if not page.eval_on_selector(f"{tile} span.{s}", "e => e.textContent.trim()"):
            fail(f"the live tile shows no {s}")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "live.png"))
    return {"boxes": len(boxes), "spread": spread}


def name_event(page, shots):
    page.goto(ARGS.url + "/#events")
    sel = "div.event img.snapshot"
    deadline = time.time() + WAIT_MS / 1000
    event = None
    while time.time() < deadline:
        page.click("#events-refresh")
        page.wait_for_timeout(1500)
        for ev in page.query_selector_all("div.event"):
            if ev.query_selector("img.snapshot") and "person" in (ev.text_content() or ""):
                event = ev
                break
        if event:
            break
    if not event:
        fail(f"no event of a person with a snapshot on the events page ({sel})")
    event_id = event.get_attribute("data-id")
    wait_js(page, "id => { const i = document.querySelector(`div.event[data-id=\"${id}\"] img.snapshot`);"
            " return i && i.complete && i.naturalWidth > 0; }", event_id,
            what="the event's snapshot to load")
    page.screenshot(path=str(shots / "events.png"))
    event.query_selector("input.label-input").fill("alice")
    event.query_selector("button.name-it").click()
    reply = f'div.event[data-id="{event_id}"] div.reply.ok'
    try:
        page.wait_for_selector(reply, timeout=WAIT_MS)
    except Exception:
        text = page.eval_on_selector(f'div.event[data-id="{event_id}"] div.reply',
                                     "e => e.className + ': ' + e.textContent")
        fail(f"naming event {event_id} gave no ok reply: {text}")
    named = page.text_content(reply)
    # "False positive" on another event: the daemon's answer is shown on it (ok while the
    # object is still tracked, an error that says why once it has ended).
    other = next((e for e in page.query_selector_all("div.event")
                  if e.get_attribute("data-id") != event_id), None)
    fp_reply = None
    if other:
        oid = other.get_attribute("data-id")
        other.query_selector("button.false-positive").click()
        sel = f'div.event[data-id="{oid}"] div.reply'
        wait_js(page, "s => { const r = document.querySelector(s); return r && "
                "(r.classList.contains('ok') || r.classList.contains('error')) && r.textContent; }",
                sel, what="the false-positive reply on the page")
        fp_reply = page.text_content(sel)
    return {"event": event_id, "reply": named, "false_positive_reply": fp_reply}


def bad_upload(page, camera, shots):
    page.goto(ARGS.url + "/#samples")
    page.wait_for_selector("form#upload-form", timeout=WAIT_MS)
    wait_js(page, "c => [...document.querySelectorAll('#upload-camera option')].some(o => o.value === c)",
            camera, what="the camera in the upload form")
    page.select_option("#upload-camera", camera)
    page.fill("#upload-label", "alice")
    page.set_input_files("#upload-files", files=[
        {"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"this is not a picture" * 50}])
    page.click("#upload-submit")
    page.wait_for_selector("#upload-results li.error", timeout=WAIT_MS)
    text = page.text_content("#upload-results li.error")
    if "broken.jpg" not in text or "image" not in text:
        fail(f"the upload error does not name the file and the problem: {text!r}")
    page.wait_for_selector("section.learner div.sample", timeout=WAIT_MS)
    page.screenshot(path=str(shots / "samples.png"), full_page=True)
    return {"upload_error": text}


def train_and_roll_back(page, model, shots):
    page.goto(ARGS.url + "/#training")
    learner = f'section.learner[data-model="{model}"]'
    page.wait_for_selector(f"{learner} div.head", timeout=WAIT_MS)
    before = page.eval_on_selector_all(f"{learner} div.head", "els => els.map(e => +e.dataset.version)")
    newest = max(before)
    page.click(f"{learner} button.train-now")
    wait_js(page, "([sel, v]) => [...document.querySelectorAll(sel + ' div.head')].some(e => +e.dataset.version > v)",
            [learner, newest], timeout_ms=WAIT_MS * 2, what="a new head on the training page")
    trained = max(page.eval_on_selector_all(f"{learner} div.head", "els => els.map(e => +e.dataset.version)"))
    page.wait_for_selector(f'{learner} div.head[data-version="{trained}"] table.confusion td', timeout=WAIT_MS)
    page.screenshot(path=str(shots / "training.png"), full_page=True)
    page.click(f'{learner} button.rollback[data-version="1"]')
    page.wait_for_selector(f"{learner} div.reply.ok", timeout=WAIT_MS)
    return {"trained": trained, "rollback_reply": page.text_content(f"{learner} div.reply.ok")}


def edit_samples(page):
    """Relabels one `bob` sample to `carol` and deletes the other, on the Samples page."""
    page.goto(ARGS.url + "/#samples")
    group = f'section.learner[data-model="{ARGS.model}"] div.label-group[data-label="bob"]'
    page.wait_for_selector(f"{group} div.sample", timeout=WAIT_MS)
    ids = page.eval_on_selector_all(f"{group} div.sample", "els => els.map(e => e.dataset.id)")
    if len(ids) != 2:
        fail(f"expected the two bob samples on the samples page, found {ids}")
    page.once("dialog", lambda d: d.accept("carol"))
    page.click(f'{group} div.sample[data-id="{ids[0]}"] button.relabel')
    page.wait_for_selector(f'div.label-group[data-label="carol"] div.sample', timeout=WAIT_MS)
    page.once("dialog", lambda d: d.accept())
    page.click(f'{group} div.sample[data-id="{ids[1]}"] button.delete')
    wait_js(page, "sel => !document.querySelector(sel + ' div.sample')", group,
            what="the deleted sample to leave the page")
    return {"relabeled": ids[0], "deleted": ids[1]}


def drop_event(page, event_id):
    """Drops the event named earlier, on the Events page."""
    page.goto(ARGS.url + "/#events")
    sel = f'div.event[data-id="{event_id}"]'
    page.wait_for_selector(sel, timeout=WAIT_MS)
    page.once("dialog", lambda d: d.accept())
    page.click(f"{sel} button.drop")
    wait_js(page, "s => !document.querySelector(s)", sel, what="the dropped event to go")
    return {"dropped": event_id}


def other_pages(page, shots):
    for route in ("status",):
        page.goto(ARGS.url + f"/#{route}")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / f"{route}.png"), full_page=True)
    log = page.text_content("pre#log") or ""
    if "web page on" not in log:
        fail(f"the status page's log does not show the daemon's start: {log[:300]!r}")


def access():
    url = ARGS.url
    status, body = post(url + "/api/cmd/status")
    if status != 403:
        fail(f"a POST without a session got {status}, not 403: {body}")
    # A session, opened as the page does.
    _, raw, headers = get(url + "/api/session")
    cookie = headers.get("Set-Cookie", "").split(";")[0]
    csrf = json.loads(raw)["csrf"]
    if not cookie or not csrf:
        fail(f"GET /api/session opened no session: {headers} {raw!r}")
    status, body = post(url + "/api/cmd/status", headers={"Cookie": cookie})
    if status != 403 or "CSRF" not in body.get("error", ""):
        fail(f"a POST without the CSRF token got {status}: {body}")
    status, body = post(url + "/api/cmd/status",
                        headers={"Cookie": cookie, "X-CSRF-Token": csrf,
                                 "Origin": "http://attacker.example"})
    if status != 403:
        fail(f"a cross-site POST got {status}: {body}")
    status, body = post(url + "/api/cmd/status", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    if status != 200 or body.get("ok") is not True:
        fail(f"a POST with session and token got {status}: {body}")
    # Bodies over the limits: 413, with a JSON error that names the limit.
    auth = {"Cookie": cookie, "X-CSRF-Token": csrf}
    status, body = post(url + "/api/cmd/status", body=b" " * 300_000, headers=auth)
    if status != 413 or body.get("ok") is not False:
        fail(f"a 300 kB command got {status}: {body}")
    status, body = post(url + f"/api/samples/alice?camera={ARGS.camera}&name=huge.jpg",
                        body=b"\xff" * (1_100_000), headers={**auth, "Content-Type": "image/jpeg"})
    if status != 413 or "max_upload_mb" not in body.get("error", ""):
        fail(f"an upload over [http].max_upload_mb = 1 got {status}: {body}")
    return {"csrf": "enforced", "limits": "enforced"}


def metrics():
    def processed():
        _, raw, _ = get(ARGS.url + "/metrics")
        families = {f.name: f for f in text_string_to_metric_families(raw.decode())}
        for want in ("adaptd_frames_processed", "adaptd_inference_seconds", "adaptd_fps",
                     "adaptd_frames_read", "adaptd_decode_seconds", "adaptd_objects",
                     "adaptd_samples", "adaptd_training_runs", "adaptd_mqtt_connected",
                     "adaptd_resident_memory_bytes"):
            if want not in families:
                fail(f"/metrics has no {want}; it has {sorted(families)}")
        return sum(s.value for s in families["adaptd_frames_processed"].samples
                   if s.name.endswith("_total"))
    first = processed()
    time.sleep(3)
    second = processed()
    if not second > first:
        fail(f"adaptd_frames_processed_total did not move in 3 s ({first} -> {second})")
    return {"frames_processed": [first, second]}


def login_flow(browser, password):
    """With a password set: the API refuses strangers, the page asks for the password, a
    wrong one is refused on the page, the right one opens the live view, logging out closes
    it again."""
    status = None
    try:
        get(ARGS.url + "/api/state")
    except urllib.error.HTTPError as e:
        status = e.code
    if status != 401:
        fail(f"GET /api/state without logging in got {status}, not 401")
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = ctx.new_page()
    page.goto(ARGS.url + "/#live")
    page.wait_for_selector("form#login-form", state="visible", timeout=WAIT_MS)
    page.fill("#password", password + "-wrong")
    page.click("#login-submit")
    wait_js(page, "() => (document.querySelector('#login-error').textContent || '').length > 0",
            what="the wrong password's error on the page")
    error = page.text_content("#login-error")
    page.screenshot(path=str(Path(ARGS.shots) / "login-phone.png"))
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_selector(f'div.camera[data-camera="{ARGS.camera}"]', timeout=WAIT_MS)
    cookies = {c["name"]: c for c in ctx.cookies()}
    session = cookies.get("adaptd_session")
    if not session or not session.get("httpOnly") or session.get("sameSite") != "Strict":
        fail(f"the session cookie is not HttpOnly and SameSite=Strict: {session}")
    ctx.close()
    return {"wrong_password_error": error}


def speakers(browser, camera, wav, shots):
    """A microphone's Speakers view: a voice enrolled from a WAV upload, another recorded in
    the browser (chromium's fake microphone), each stored (the page shows the reply)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800},
                              permissions=["microphone"])
    page = ctx.new_page()
    page.goto(ARGS.url + "/#speakers")
    sec = f'section.speakers[data-camera="{camera}"]'
    page.wait_for_selector(sec, timeout=WAIT_MS)
    page.fill(f"{sec} input.enrol-label", "alice")
    page.set_input_files(f"{sec} input.enrol-file", wav)
    page.click(f"{sec} button.enrol-submit")
    page.wait_for_selector(f"{sec} ul.enrol-results li.ok", timeout=WAIT_MS)
    uploaded = page.text_content(f"{sec} ul.enrol-results li.ok")
    page.fill(f"{sec} input.enrol-label", "bob")
    page.click(f"{sec} button.record")
    page.wait_for_timeout(2500)
    page.click(f"{sec} button.record")  # stop early: sends what was recorded
    try:
        wait_js(page, "sel => [...document.querySelectorAll(sel + ' ul.enrol-results li')]"
                ".some(li => /^bob-/.test(li.textContent) && !li.classList.contains('pending'))",
                sec, what="the recording's reply")
    except SystemExit:
        fail("no reply to the recording; the page shows: " + json.dumps(page.eval_on_selector(
            sec, "e => e.textContent")))
    recorded = page.eval_on_selector_all(
        f"{sec} ul.enrol-results li", "els => els.map(e => e.className + ': ' + e.textContent)")
    if not any(r.startswith("ok") for r in recorded):
        fail(f"the recorded voice was not stored: {recorded}")
    wait_js(page, "sel => /bob/.test(document.querySelector(sel).textContent)", sec,
            what="the recorded voice among the enrolled ones")
    out = {"uploaded": uploaded, "recorded": recorded}
    # Each voice keeps a clip to listen to: served as WAV, with a player on the Samples page.
    _, raw, _ = get(ARGS.url + f"/api/samples?model={ARGS.model}")
    clips = [s_["clip_url"] for s_ in json.loads(raw)["samples"] if s_.get("clip_url")]
    if len(clips) != 2:
        fail(f"expected a clip_url on both voice samples: {raw[:500]!r}")
    status, wav, headers = get(ARGS.url + clips[0])
    if status != 200 or not wav.startswith(b"RIFF") or headers.get("Content-Type") != "audio/wav":
        fail(f"{clips[0]} is not a WAV: {status} {headers.get('Content-Type')} {wav[:12]!r}")
    out["clip_bytes"] = len(wav)
    page.goto(ARGS.url + "/#samples")
    page.wait_for_selector(f'section.learner[data-model="{ARGS.model}"] div.sample audio.clip',
                           timeout=WAIT_MS)
    page.goto(ARGS.url + "/#speakers")
    page.wait_for_selector(sec, timeout=WAIT_MS)
    fifo = None
    if ARGS.speak_fifo:
        out["recent"], fifo = speak(page, sec)
    page.wait_for_timeout(500)
    page.screenshot(path=str(Path(shots) / "speakers.png"), full_page=True)
    ctx.close()
    if fifo:
        # Closing the microphone ends its stream, and with it (its only stream) the daemon.
        fifo.close()
    return out


def speak(page, sec):
    """Trains the voices' head over the API, then says alice's sentence into the
    microphone (a FIFO the daemon reads raw PCM from): the page lists who spoke."""
    _, raw, headers = get(ARGS.url + "/api/session")
    auth = {"Cookie": headers.get("Set-Cookie", "").split(";")[0],
            "X-CSRF-Token": json.loads(raw)["csrf"]}
    status, body = post(ARGS.url + "/api/cmd/train", body=b'{"force": true}', headers=auth)
    if status != 200:
        fail(f"train over the API got {status}: {body}")
    deadline = time.time() + WAIT_MS / 1000
    while time.time() < deadline:
        _, state, _ = get(ARGS.url + "/api/state")
        if any(l.get("head_version") for l in json.loads(state)["learners"].values()):
            break
        time.sleep(0.5)
    else:
        fail("no head in service after training the voices")
    pcm = Path(ARGS.speak_pcm).read_bytes()
    # Kept open (the caller closes it): a microphone whose writer goes away has ended.
    fifo = open(ARGS.speak_fifo, "wb")  # noqa: SIM115
    # The sentence, then a second of silence so the voice gate closes the utterance.
    fifo.write(pcm + b"\0\0" * 16000)
    fifo.flush()
    wait_js(page, "sel => [...document.querySelectorAll(sel + ' ul.recent-speakers li')]"
            ".some(li => /alice/.test(li.textContent))", sec,
            what="alice among the recent speakers")
    recent = page.eval_on_selector_all(f"{sec} ul.recent-speakers li",
                                       "els => els.map(e => e.textContent)")
    return recent, fifo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--camera", required=True)
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--shots", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--password", help="only the login flow, against a daemon with this password")
    ap.add_argument("--speakers-wav", help="only the Speakers view: enrol this WAV, record one")
    ap.add_argument("--speak-fifo", help="with --speakers-wav: the microphone's FIFO...")
    ap.add_argument("--speak-pcm", help="...and the raw 16 kHz PCM to say into it")
    global ARGS
    ARGS = ap.parse_args()
    shots = Path(ARGS.shots)
    shots.mkdir(parents=True, exist_ok=True)
    out = {}
    errors = []
    with sync_playwright() as p:
        fake_mic = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
        browser = p.chromium.launch(executable_path=ARGS.chromium,
                                    args=CHROMIUM_ARGS + (fake_mic if ARGS.speakers_wav else []))
        if ARGS.speakers_wav:
            print(json.dumps({"speakers": speakers(browser, ARGS.camera, ARGS.speakers_wav,
                                                   ARGS.shots)}))
            return
        if ARGS.password:
            print(json.dumps({"login": login_flow(browser, ARGS.password)}))
            return
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        out["live"] = live(page, ARGS.camera, shots)
        out["named"] = name_event(page, shots)
        out["upload"] = bad_upload(page, ARGS.camera, shots)
        out["training"] = train_and_roll_back(page, ARGS.model, shots)
        out["samples"] = edit_samples(page)
        out["dropped"] = drop_event(page, out["named"]["event"])
        other_pages(page, shots)
        # The live page on a phone's screen.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
        pp = phone.new_page()
        pp.goto(ARGS.url + "/#live")
        pp.wait_for_selector(f'div.camera[data-camera="{ARGS.camera}"] div.box', timeout=WAIT_MS)
        pp.wait_for_timeout(500)
        pp.screenshot(path=str(shots / "live-phone.png"))
        browser.close()
    if errors:
        fail(f"the page threw: {errors}")
    out["access"] = access()
    out["metrics"] = metrics()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
