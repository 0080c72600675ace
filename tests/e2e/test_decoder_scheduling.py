"""The page's decoder handle (static/js/decoder.js) schedules decodes as the annotator needs: clicks in
order, hovers never queued (only the latest waits), and a hover that went stale while the pointer keeps
moving held for the next pointer event. Driven in Chromium against a scripted worker that answers a
decode only when the test releases it, so nothing here depends on timing."""

import pytest
from playwright.sync_api import Page

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

# A worker that keeps each decode until told to answer: {type: "release"} answers the oldest one.
SETUP = """
async () => {
  const source = `
    const waiting = [];
    self.onmessage = ({ data }) => {
      if (data.type === "release") {
        const call = waiting.shift();
        self.postMessage({ id: call.id, ok: true, result: { ms: 1, candidates: [], tag: call.tag } });
      } else {
        waiting.push(data);
        self.postMessage({ id: -1, sent: data.tag });
      }
    };`;
  const { Decoder } = await import("/static/js/decoder.js");
  const decoder = new Decoder(URL.createObjectURL(new Blob([source], { type: "text/javascript" })));
  const sent = [];
  const handle = decoder.worker.onmessage;
  decoder.worker.onmessage = (event) => (event.data.id === -1 ? sent.push(event.data.sent) : handle(event));
  const release = () => decoder.worker.postMessage({ type: "release" });
  const until = async (check) => {
    const deadline = performance.now() + 10000;
    while (!check()) {
      if (performance.now() > deadline) throw new Error("the decoder never got there");
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  window.t = { decoder, sent, release, until };
}
"""


def test_clicks_run_in_order_and_hovers_never_queue(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/accounts/login/")
    page.evaluate(SETUP)
    outcome = page.evaluate(
        """async () => {
          const { decoder, sent, release, until } = window.t;
          const now = performance.now();
          const first = decoder.hover({ tag: "h1" }, now);
          await until(() => sent.length === 1);
          // While h1 decodes: three more hovers (each replaces the last) and two clicks.
          const replaced = [decoder.hover({ tag: "h2" }, now + 1), decoder.hover({ tag: "h3" }, now + 2)];
          const clicks = [decoder.decode({ tag: "c1" }), decoder.decode({ tag: "c2" })];
          const latest = decoder.hover({ tag: "h4" }, performance.now());
          for (let i = 0; i < 4; i++) { await until(() => sent.length === i + 1); release(); }
          const results = await Promise.all([first, ...replaced, ...clicks, latest]);
          return { sent, results: results.map((r) => r && r.tag) };
        }"""
    )
    assert outcome["sent"] == ["h1", "c1", "c2", "h4"]
    assert outcome["results"] == ["h1", None, None, "c1", "c2", "h4"]


def test_a_stale_hover_waits_for_the_next_pointer_event(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/accounts/login/")
    page.evaluate(SETUP)
    outcome = page.evaluate(
        """async () => {
          const { decoder, sent, release, until } = window.t;
          // A steady pointer with events 1 s apart (slowed down so that no step races the clock).
          decoder.hold.maxIntervalMs = 2000;
          const now = performance.now();
          const first = decoder.hover({ tag: "h1" }, now - 3000);
          await until(() => sent.length === 1);
          const stale = [decoder.hover({ tag: "h2" }, now - 2000), decoder.hover({ tag: "h3" }, now - 1000)];
          const waiting = decoder.hover({ tag: "h4" }, now - 10);
          const hold = decoder.holdFor({ time: now - 10 }, now);
          release();
          await first;
          await new Promise((r) => setTimeout(r, 50));
          const sentWhileHeld = [...sent];
          const next = decoder.hover({ tag: "h5" }, performance.now());
          await until(() => sent.length === 2);
          release();
          const results = await Promise.all([...stale, waiting, next]);
          return { hold, sentWhileHeld, sent, results: results.map((r) => r && r.tag) };
        }"""
    )
    assert outcome["hold"] == pytest.approx(993)  # the next event is due 1 s after h4, plus 3 ms slack
    assert outcome["sentWhileHeld"] == ["h1"]
    assert outcome["sent"] == ["h1", "h5"]
    assert outcome["results"] == [None, None, None, "h5"]


def test_a_held_hover_runs_when_the_pointer_stops(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/accounts/login/")
    page.evaluate(SETUP)
    outcome = page.evaluate(
        """async () => {
          const { decoder, sent, release, until } = window.t;
          decoder.hold.maxIntervalMs = 2000;
          const now = performance.now();
          const first = decoder.hover({ tag: "h1" }, now - 600);
          await until(() => sent.length === 1);
          decoder.hover({ tag: "h2" }, now - 400).then(() => {});
          decoder.hover({ tag: "h3" }, now - 200).then(() => {});
          const last = decoder.hover({ tag: "h4" }, now);
          release();
          await first;
          // No further event: h4 goes out once the next one is overdue (200 ms + slack after h4).
          const heldAt = performance.now();
          await until(() => sent.length === 2);
          const waited = performance.now() - heldAt;
          release();
          return { sent, waited, last: (await last).tag };
        }"""
    )
    assert outcome["sent"] == ["h1", "h4"]
    assert outcome["last"] == "h4"
    assert 100 <= outcome["waited"] <= 1000


def test_without_a_steady_pointer_nothing_is_held(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/accounts/login/")
    page.evaluate(SETUP)
    held = page.evaluate(
        """async () => {
          const { decoder } = window.t;
          const now = performance.now();
          const noHistory = decoder.holdFor({ time: now - 10 }, now);
          // Events 100 ms apart are not a steady move.
          for (let i = 0; i < 5; i++) decoder.hoverTimes.push(now - 500 + 100 * i);
          return { noHistory, slow: decoder.holdFor({ time: now - 10 }, now) };
        }"""
    )
    assert held == {"noHistory": 0, "slow": 0}
