//! The device header: who, whether it is there, what it runs, what its learners hold.

use super::super::layout::Section;
use super::super::line::{Line, Style};
use super::super::model::{Presence, WatchView};
use super::super::reduce::{LearnerInfo, Samples};
use super::super::text::{age, fmt_span, or_dash, plural, str_width, DASH, SEP};
use super::{field, freshest, prio};
use crate::wire::Availability;

/// `adaptd watch · shed · online · seen 2 s ago · adaptd 0.1.0`
pub fn title(v: &WatchView, now_ms: i64) -> Line {
    let mut l = Line::default();
    l.push(Style::Bold, "adaptd watch")
        .plain(SEP)
        .push(Style::Bold, &v.device);
    if let Some(only) = &v.only {
        l.plain("/").push(Style::Bold, only);
    }
    l.plain(SEP);
    match v.available.as_ref().map(|a| &a.value) {
        None => l.push(Style::Dim, DASH),
        Some(Presence::Known(Availability::Online)) => l.push(Style::Green, "online"),
        Some(Presence::Known(Availability::Offline)) => l.push(Style::Red, "offline"),
        Some(Presence::Known(Availability::Stopped)) => l.push(Style::Yellow, "stopped"),
        Some(Presence::Other(w)) => l.push(Style::Yellow, w),
    };
    match v.last_live_ms {
        Some(at) => l.plain(format!("{SEP}seen {}", age(now_ms, at))),
        None => l.plain(format!("{SEP}no live message yet")),
    };
    if let Some(s) = v
        .device_state
        .as_ref()
        .filter(|s| !s.value.binary_version.is_empty())
    {
        l.plain(format!("{SEP}adaptd {}", s.value.binary_version));
    }
    l
}

/// `up 3h12m · CPU 52°C · auto-train on · training running · 1 MQTT reconnect`
pub fn device(v: &WatchView) -> Line {
    let mut l = Line::default();
    let mut parts = 0;
    let mut sep = |l: &mut Line| {
        if parts > 0 {
            l.plain(SEP);
        }
        parts += 1;
    };
    if let Some(f) = v.figures.as_ref().map(|f| &f.value) {
        sep(&mut l);
        l.plain(format!("up {}", fmt_span(f.uptime_s)));
        // Absent on boards without a thermal zone: left out rather than shown as a dash.
        if let Some(t) = f.cpu_temp_c {
            sep(&mut l);
            l.plain(format!("CPU {t:.0}°C"));
        }
    }
    if let Some(s) = v.device_state.as_ref().map(|s| &s.value) {
        sep(&mut l);
        l.plain(if s.auto_train {
            "auto-train on"
        } else {
            "auto-train off"
        });
    }
    let running = freshest(
        field(v.device_state.as_ref(), |s| Some(s.training)),
        field(v.figures.as_ref(), |f| f.training),
    )
    .flatten();
    if running == Some(true) {
        sep(&mut l);
        l.push(Style::Yellow, "training running");
    }
    if let Some(n) = v.figures.as_ref().map(|f| f.value.mqtt_reconnects) {
        if n > 0 {
            sep(&mut l);
            l.plain(format!("{n} MQTT reconnect{}", plural(n)));
        }
    }
    if v.untracked > 0 {
        sep(&mut l);
        l.push(
            Style::Yellow,
            format!(
                "more than {} cameras: the rest are not shown",
                super::super::model::MAX_CAMERAS
            ),
        );
    }
    if parts == 0 {
        l.push(Style::Dim, "no state or stats yet");
    }
    l
}

/// One line per learner (`state.learners`), or, before any `state`, the samples of `stats`.
pub fn learners(v: &WatchView, width: usize) -> Section {
    let rows: Vec<Line> = match v.device_state.as_ref().map(|s| &s.value) {
        Some(s) if !s.learners.is_empty() => s.learners.iter().map(|l| learner(l, width)).collect(),
        Some(_) => vec![Line::plain_text("learners: none")],
        None => match v.figures.as_ref().map(|f| &f.value.samples) {
            Some(samples) => {
                let mut l = Line::default();
                samples_part(&mut l, samples, width);
                vec![l]
            }
            None => vec![Line::plain_text(format!("learners: {DASH}"))],
        },
    };
    let total = v
        .device_state
        .as_ref()
        .map_or(rows.len(), |s| s.value.learner_count.max(rows.len()));
    Section::elastic(prio::LEARNERS, false, Vec::new(), rows, total, 1, |n| {
        format!("   … {n} more learners")
    })
}

/// `learner mobilenetv2 (tract) · head v3 (macro-F1 0.94) · samples 23: alice 14 · bob 9`
fn learner(info: &LearnerInfo, width: usize) -> Line {
    let mut l = Line::default();
    l.plain("learner ").push(Style::Bold, or_dash(&info.model));
    if !info.backend.is_empty() {
        l.plain(format!(" ({})", info.backend));
    }
    l.plain(SEP);
    match info.head_version {
        None => l.plain("no head yet"),
        Some(v) => {
            l.plain(format!("head v{v}"));
            if let Some(f1) = info.head_macro_f1 {
                l.plain(format!(" (macro-F1 {f1:.2})"));
            }
            &mut l
        }
    };
    l.plain(SEP);
    samples_part(&mut l, &info.samples, width);
    l
}

/// `samples 42: alice 20 · bob 12 · cat 10 · +3 more`, as many labels as fit in `width`.
fn samples_part(l: &mut Line, s: &Samples, width: usize) {
    if s.labels == 0 {
        l.plain("samples: none yet");
        return;
    }
    l.plain(format!("samples {}", s.total));
    let more = |rest: usize| format!("{SEP}+{rest} more");
    let reserve = str_width(&more(s.labels));
    for (i, (label, count)) in s.top.iter().enumerate() {
        let sep = if i == 0 { ": " } else { SEP };
        let part_w = str_width(sep) + str_width(label) + 1 + count.to_string().len();
        let last = i + 1 == s.labels;
        let needed = l.width() + part_w + if last { 0 } else { reserve };
        if needed > width {
            if i == 0 {
                // Not even one label fits: say how many there are rather than cut one.
                l.plain(format!(" in {} label{}", s.labels, plural(s.labels as u64)));
            } else {
                l.plain(more(s.labels - i));
            }
            return;
        }
        l.plain(sep)
            .push(Style::Bold, label)
            .plain(format!(" {count}"));
    }
    if s.labels > s.top.len() {
        l.plain(more(s.labels - s.top.len()));
    }
}
