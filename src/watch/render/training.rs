//! The last training run: running, deployed, kept back or failed.

use super::super::line::{Line, Style};
use super::super::model::WatchView;
use super::super::reduce::TrainingInfo;
use super::super::text::{age, fmt_span, DASH, SEP};
use super::{field, freshest};

/// `training: mobilenetv2 v4 deployed 2 min ago · macro-F1 0.931 (current 0.884) · ...`
pub fn line(v: &WatchView, now_ms: i64) -> Line {
    let mut l = Line::default();
    l.plain("training: ");
    let from_state = field(v.device_state.as_ref(), |s| Some(s.training));
    let from_stats = field(v.figures.as_ref(), |f| f.training);
    let flag_at = from_state
        .as_ref()
        .map(|f| f.0)
        .max(from_stats.as_ref().map(|f| f.0));
    let flag = freshest(from_state, from_stats).flatten();
    let Some(t) = &v.training else {
        match flag {
            Some(true) => l.push(Style::Yellow, "running"),
            Some(false) => l.plain("idle"),
            None => l.push(Style::Dim, DASH),
        };
        return l;
    };
    let started = matches!(t.value, TrainingInfo::Started { .. });
    // A `training` message can be missed (the watch started mid-run, or QoS 0 lost it):
    // when the fresher flag of `state`/`stats` disagrees, it wins.
    if let (Some(running), Some(at)) = (flag, flag_at) {
        if at > t.at_ms && running != started {
            if running {
                l.push(Style::Yellow, "running");
            } else {
                l.plain("idle");
            }
            return l;
        }
    }
    let when = age(now_ms, t.at_ms);
    let model = |l: &mut Line, m: &str| {
        if !m.is_empty() {
            l.plain(format!("{m} "));
        }
    };
    match &t.value {
        TrainingInfo::Started { model: m, trigger } => {
            model(&mut l, m);
            let secs = now_ms.saturating_sub(t.at_ms).max(0) / 1000;
            l.push(Style::Yellow, "running")
                .plain(format!(" for {}", fmt_span(secs as u64)));
            if !trigger.is_empty() {
                l.plain(format!(" (trigger: {trigger})"));
            }
        }
        TrainingInfo::Finished {
            model: m,
            version,
            deployed,
            reason,
            accuracy,
            macro_f1,
            current_macro_f1,
        } => {
            model(&mut l, m);
            if *deployed {
                l.push(Style::Green, format!("v{version} deployed"));
            } else {
                l.push(Style::Yellow, format!("v{version} not deployed"));
            }
            l.plain(format!(" {when}{SEP}macro-F1 {macro_f1:.3}"));
            if let Some(cur) = current_macro_f1 {
                l.plain(format!(" (current {cur:.3})"));
            }
            l.plain(format!("{SEP}accuracy {accuracy:.3}"));
            if !reason.is_empty() {
                l.plain(format!("{SEP}{reason}"));
            }
        }
        TrainingInfo::Failed { model: m, error } => {
            model(&mut l, m);
            l.push(Style::Red, "failed")
                .plain(format!(" {when}: "))
                .plain(if error.is_empty() { DASH } else { error });
        }
        TrainingInfo::Unknown => {
            l.plain(format!("{DASH} {when}"));
        }
    }
    l
}
