//! A camera's latest frame: a summary line, a column header and one row per item.

use super::super::layout::Section;
use super::super::line::{Line, Style};
use super::super::model::CameraView;
use super::super::reduce::ItemRow;
use super::super::text::{age, fit, or_dash, pad, pad_left, plural, str_width, DASH, SEP};

/// Cells of a score bar.
const BAR_CELLS: usize = 8;
/// Widest label columns of the detections table; longer labels end in `…`.
const LABEL_COLUMN_MAX: usize = 18;
const BOX_COLUMN_MAX: usize = 23;

/// `last frame 0 s ago · #12034 · 640x480 · 38.2 ms · 3 items`, then the table.
pub fn section(cam: &CameraView, width: usize, now_ms: i64, priority: u16) -> Section {
    let Some(f) = &cam.frame else {
        let microphone = cam
            .state
            .as_ref()
            .is_some_and(|s| s.value.kind == "microphone");
        let nothing = if microphone {
            "no utterance yet"
        } else {
            "no frame yet"
        };
        return Section::fixed(priority, false, Line::styled(Style::Dim, nothing));
    };
    let frame = &f.value;
    let mut summary = Line::default();
    summary.plain(format!(
        "last frame {}{SEP}#{}",
        age(now_ms, f.at_ms),
        frame.frame_id
    ));
    // Audio has no picture: no size.
    if frame.width.is_some() || frame.height.is_some() {
        let side = |v: Option<u32>| v.map_or_else(|| DASH.to_owned(), |v| v.to_string());
        summary.plain(format!("{SEP}{}x{}", side(frame.width), side(frame.height)));
    }
    summary.plain(format!("{SEP}{:.1} ms", frame.inference_ms));
    if frame.items.is_empty() {
        summary.plain(format!("{SEP}nothing detected"));
        return Section::fixed(priority, false, summary);
    }
    let n = frame.item_count;
    summary.plain(format!("{SEP}{n} item{}", plural(n as u64)));
    let (header, rows) = item_table(&frame.items, width);
    Section::elastic(
        priority,
        false,
        vec![summary, header],
        rows,
        n.max(frame.items.len()),
        1,
        |n| format!("   … {n} more"),
    )
}

/// The detections table: column header and one row per item, with the index the `label`
/// command's `detection` refers to.
pub(super) fn item_table(items: &[ItemRow], width: usize) -> (Line, Vec<Line>) {
    let labels: Vec<String> = items
        .iter()
        .map(|i| fit(or_dash(&i.label), LABEL_COLUMN_MAX))
        .collect();
    let boxes: Vec<Option<String>> = items
        .iter()
        .map(|i| i.bbox.map(|b| fit(&fmt_box(b), BOX_COLUMN_MAX)))
        .collect();
    let with_box = boxes.iter().any(Option::is_some);
    let heads: Vec<Option<String>> = items
        .iter()
        .map(|i| {
            i.head
                .as_ref()
                .map(|h| fit(or_dash(&h.label), LABEL_COLUMN_MAX))
        })
        .collect();
    let idx_w = (items.len().saturating_sub(1)).to_string().len();
    let label_w = column_width(labels.iter().map(String::as_str), "backbone");
    let box_w = column_width(boxes.iter().flatten().map(String::as_str), "box");
    let head_w = column_width(heads.iter().flatten().map(String::as_str), "head");
    // Bars only when the whole row fits: numbers matter more than bars.
    let row_w = |bar: usize| {
        let score = 4 + if bar > 0 { 1 + bar } else { 0 };
        idx_w
            + 2
            + label_w
            + 2
            + score
            + if with_box { 2 + box_w } else { 0 }
            + 2
            + head_w
            + 1
            + score
            + " (unknown)".len()
    };
    let bar = if row_w(BAR_CELLS) <= width {
        BAR_CELLS
    } else {
        0
    };
    let score_w = 4 + if bar > 0 { 1 + bar } else { 0 };

    let mut header = Line::default();
    let mut h = format!(
        "{}  {}  {}",
        pad_left("#", idx_w),
        pad("backbone", label_w),
        pad("score", score_w)
    );
    if with_box {
        h.push_str(&format!("  {}", pad("box", box_w)));
    }
    h.push_str("  head");
    header.push(Style::Dim, h);

    let rows = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let mut l = Line::default();
            l.plain(format!("{}  ", pad_left(&i.to_string(), idx_w)))
                .push(Style::Bold, &labels[i])
                .plain(" ".repeat(label_w.saturating_sub(str_width(&labels[i])) + 2))
                .plain(pad(&score_cell(item.score, bar), score_w));
            if with_box {
                let b = boxes[i].as_deref().unwrap_or(DASH);
                l.plain(format!("  {}", pad(b, box_w)));
            }
            l.plain("  ");
            match (&item.head, &heads[i]) {
                (Some(head), Some(label)) => {
                    let style = if head.unknown {
                        Style::Yellow
                    } else {
                        Style::Bold
                    };
                    l.push(style, label)
                        .plain(" ".repeat(head_w.saturating_sub(str_width(label)) + 1))
                        .plain(score_cell(head.score, bar));
                    if head.unknown && label != "unknown" {
                        l.push(Style::Yellow, " (unknown)");
                    }
                }
                _ => {
                    l.push(Style::Dim, DASH);
                }
            }
            l.trim_end();
            l
        })
        .collect();
    (header, rows)
}

fn column_width<'a>(cells: impl Iterator<Item = &'a str>, title: &str) -> usize {
    cells.map(str_width).fold(str_width(title), usize::max)
}

/// `0.91 ███████░` (or just `0.91` when `bar` is 0).
fn score_cell(score: f32, bar: usize) -> String {
    // A NaN or an infinity from a broken payload prints as such, and fills no cells.
    let s = f64::from(score);
    let number = format!("{s:.2}");
    if bar == 0 {
        return number;
    }
    let filled = (s.clamp(0.0, 1.0) * bar as f64).round() as usize;
    format!(
        "{number} {}{}",
        "█".repeat(filled),
        "░".repeat(bar - filled.min(bar))
    )
}

/// `x1,y1 x2,y2` in whole pixels.
fn fmt_box(b: [f32; 4]) -> String {
    format!("{:.0},{:.0} {:.0},{:.0}", b[0], b[1], b[2], b[3])
}
