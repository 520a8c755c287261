//! A camera's two header lines: what it is and runs, and its live figures.

use super::super::line::{Line, Style};
use super::super::model::{CameraView, WatchView};
use super::super::reduce::SourceLine;
use super::super::text::{fmt_ms, or_dash, DASH, SEP};
use super::{field, freshest, paused};

/// `camera front · paused · model nanodet-m + mobilenetv2 · head v3 (macro-F1 0.93) · source
/// … (streaming)`
pub fn title(v: &WatchView, name: &str, cam: &CameraView) -> Line {
    let mut l = Line::default();
    let state = cam.state.as_ref().map(|s| &s.value);
    let kind = match state.map(|s| s.kind.as_str()) {
        Some("microphone") => "microphone",
        _ => "camera",
    };
    l.plain(format!("{kind} ")).push(Style::Bold, name);
    if state.is_some_and(|s| !s.enabled) {
        l.plain(SEP).push(Style::Yellow, "disabled");
    }
    if paused(cam) == Some(true) {
        l.plain(SEP).push(Style::Yellow, "paused");
    }
    if v.listed
        .as_ref()
        .is_some_and(|names| !names.iter().any(|n| n == name))
    {
        // A retained `<camera>/state` of a camera the device no longer runs.
        l.plain(SEP).push(Style::Dim, "not in the device's state");
    }
    let model = state.map_or(DASH, |s| or_dash(&s.model));
    l.plain(SEP).plain("model ").push(Style::Bold, model);
    if let Some(e) = state.map(|s| s.embedding_model.as_str()) {
        if !e.is_empty() && e != model {
            // A detector: boxes are sub-labelled through this classification backbone.
            l.plain(" + ").plain(e);
        }
    }
    l.plain(SEP);
    head(&mut l, cam);
    l.plain(SEP).plain("source ");
    l.plain(state.map_or(DASH, |s| or_dash(&s.source)));
    if let Some(ss) = source_state(cam) {
        let style = match ss.name.as_str() {
            "failed" => Style::Red,
            "reconnecting" | "ended" | "starting" | "unknown" => Style::Yellow,
            _ => Style::Plain,
        };
        l.plain(" (").push(style, or_dash(&ss.name));
        if let Some(d) = &ss.detail {
            l.plain(": ").plain(d);
        }
        l.plain(")");
    }
    l
}

/// `head v3 (macro-F1 0.93)`, `no head yet` or `head –`.
fn head(l: &mut Line, cam: &CameraView) {
    let version = freshest(
        field(cam.state.as_ref(), |s| s.head_version),
        field(cam.figures.as_ref(), |f| f.head_version),
    );
    match version {
        None => l.plain(format!("head {DASH}")),
        Some(None) => l.plain("no head yet"),
        Some(Some(v)) => {
            l.plain(format!("head v{v}"));
            // The F1 is only in `stats`; it describes the stats' head, which may lag behind
            // a head that `state` already reports as deployed.
            if let Some(f) = cam.figures.as_ref().map(|f| &f.value) {
                if let (Some(fv), Some(f1)) = (f.head_version, f.head_macro_f1) {
                    if fv == v {
                        l.plain(format!(" (macro-F1 {f1:.2})"));
                    }
                }
            }
            l
        }
    };
}

/// The fresher of the state's and the figures' source state; the detail (attempt, error)
/// only comes with the state, and is kept when the figures name the same state.
fn source_state(cam: &CameraView) -> Option<SourceLine> {
    let from_state = field(cam.state.as_ref(), |s| s.source_state.clone());
    let from_figures = field(cam.figures.as_ref(), |f| SourceLine {
        name: f.source_state.clone(),
        detail: None,
    })
    .filter(|(_, s)| !s.name.is_empty());
    let detail = from_state.as_ref().map(|s| s.1.clone());
    let mut chosen = freshest(from_state, from_figures)?;
    if chosen.detail.is_none() {
        if let Some(d) = detail.filter(|d| d.name == chosen.name) {
            chosen.detail = d.detail;
        }
    }
    Some(chosen)
}

/// `stable label: alice · 9.8 fps · p50 38 ms · p95 57 ms · 12034 frames, 12 skipped`
pub fn figures(cam: &CameraView) -> Line {
    let mut l = Line::default();
    l.plain("stable label: ");
    match cam.state.as_ref().and_then(|s| s.value.label.as_deref()) {
        Some(label) => l.push(Style::Bold, label),
        None => l.push(Style::Dim, DASH),
    };
    l.plain(SEP);
    let Some(f) = cam.figures.as_ref().map(|f| &f.value) else {
        l.push(Style::Dim, "no stats yet");
        return l;
    };
    l.plain(format!(
        "{:.1} fps{SEP}p50 {}{SEP}p95 {}{SEP}{} frames, {} skipped",
        f.fps,
        fmt_ms(f.p50),
        fmt_ms(f.p95),
        f.frames,
        f.skipped,
    ));
    l
}
