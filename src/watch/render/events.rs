//! A camera's recent consensus events, newest first.

use super::super::layout::Section;
use super::super::line::{Line, Style};
use super::super::model::{CameraView, Stamped};
use super::super::reduce::EventRow;
use super::super::text::{age, or_dash, pad, pad_left, DASH};
use crate::wire::EventKind;

pub fn section(cam: &CameraView, now_ms: i64, priority: u16) -> Section {
    if cam.events.is_empty() {
        let line = Line::plain_text("recent events: none yet");
        return Section::fixed(priority, false, line);
    }
    let rows = cam
        .events
        .iter()
        .map(|e| row(e, now_ms))
        .collect::<Vec<_>>();
    let n = rows.len();
    Section::elastic(
        priority,
        false,
        vec![Line::plain_text("recent events:")],
        rows,
        n,
        1,
        |n| format!("   … {n} older"),
    )
}

/// `   12 s ago  new     person: – → alice  0.88`
fn row(e: &Stamped<EventRow>, now_ms: i64) -> Line {
    let ev = &e.value;
    let mut l = Line::default();
    let kind = match ev.kind {
        EventKind::Unknown => DASH,
        k => k.as_str(),
    };
    l.plain(format!(
        "  {}  {}  ",
        pad_left(&age(now_ms, e.at_ms), 10),
        pad(kind, 6)
    ));
    l.plain(or_dash(&ev.track)).plain(": ");
    match &ev.before {
        Some(b) => l.push(Style::Bold, b),
        None => l.plain(DASH),
    };
    l.plain(" → ");
    match &ev.after {
        Some(a) => l.push(Style::Bold, a),
        None => l.plain(DASH),
    };
    // `end` events carry score 0: nothing to show.
    if ev.score > 0.0 {
        l.plain(format!("  {:.2}", ev.score));
    }
    l
}
