//! The last reply and the last problem, one line each.

use super::super::line::{Line, Style};
use super::super::model::{Problem, Stamped};
use super::super::reduce::ReplyInfo;
use super::super::text::{age, DASH};

/// `last reply 3 s ago: train (id a) ok: {"status":"started"}`
pub fn reply(r: &Stamped<ReplyInfo>, now_ms: i64) -> Line {
    let reply = &r.value;
    let mut l = Line::default();
    l.plain(format!(
        "last reply {}: {}",
        age(now_ms, r.at_ms),
        reply.cmd.as_deref().unwrap_or(DASH)
    ));
    if let Some(id) = &reply.id {
        l.plain(format!(" (id {id})"));
    }
    l.plain(" ");
    if reply.ok {
        l.push(Style::Green, "ok");
    } else {
        l.push(Style::Red, "error");
    }
    if let Some(d) = &reply.detail {
        l.plain(": ").plain(d);
    }
    l
}

/// `problem 5 s ago (3 so far): stats: not valid JSON (...)`
pub fn problem(p: &Stamped<Problem>, so_far: u64, now_ms: i64) -> Line {
    let mut l = Line::default();
    l.push(Style::Red, "problem")
        .plain(format!(" {}", age(now_ms, p.at_ms)));
    if so_far > 1 {
        l.plain(format!(" ({so_far} so far)"));
    }
    l.plain(format!(": {}: {}", p.value.topic, p.value.message));
    l
}
