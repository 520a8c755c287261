//! Fitting sections of lines into the terminal's rows, and redrawing in place.
//!
//! The screen is a list of [`Section`]s in display order, each with a unique priority. When
//! rows run short, blank separators go first, then sections shrink or go from the least
//! important up, so a small terminal still shows what matters most (see
//! `super::render::prio`).

use super::line::Line;

/// A block of lines with a priority (0 = kept longest). An elastic section can hide rows
/// from its end, showing `… N more` instead.
pub struct Section {
    priority: u16,
    /// A blank line before it (dropped first when rows are short).
    gap_before: bool,
    head: Vec<Line>,
    rows: Vec<Line>,
    /// Rows the section stands for (more than `rows` when the view kept only some).
    total_rows: usize,
    min_rows: usize,
    shown: usize,
    more: fn(usize) -> String,
}

impl Section {
    pub fn fixed(priority: u16, gap_before: bool, line: Line) -> Section {
        Section::elastic(priority, gap_before, vec![line], Vec::new(), 0, 0, |_| {
            String::new()
        })
    }

    pub fn elastic(
        priority: u16,
        gap_before: bool,
        head: Vec<Line>,
        rows: Vec<Line>,
        total_rows: usize,
        min_rows: usize,
        more: fn(usize) -> String,
    ) -> Section {
        let shown = rows.len();
        Section {
            priority,
            gap_before,
            head,
            rows,
            total_rows: total_rows.max(shown),
            min_rows,
            shown,
            more,
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.rows_part(self.shown)
    }

    /// Lines taken by the rows when `shown` of them are shown (plus the `… N more` line).
    fn rows_part(&self, shown: usize) -> usize {
        shown + usize::from(shown < self.total_rows)
    }

    /// Hides rows to save up to `excess` lines, keeping at least `min_rows`.
    fn shrink(&mut self, excess: usize) {
        let now = self.rows_part(self.shown);
        let floor = self.rows_part(self.min_rows.min(self.shown));
        let target = now.saturating_sub(excess).max(floor);
        if target < now {
            // Showing k < total rows costs k + 1 lines (the `… N more`).
            self.shown = target.saturating_sub(1).max(self.min_rows.min(self.shown));
        }
    }
}

fn total_lines(sections: &[Section]) -> usize {
    sections
        .iter()
        .enumerate()
        .map(|(i, s)| s.len() + usize::from(i > 0 && s.gap_before))
        .sum()
}

/// Fits the sections into `height` rows: first the blank separators go, then, from the
/// least important section up, each shrinks as far as it can and is dropped if that is not
/// enough. Priorities are unique.
pub fn layout(mut sections: Vec<Section>, height: usize) -> Vec<Line> {
    debug_assert!(
        sections
            .iter()
            .enumerate()
            .all(|(i, a)| sections[i + 1..].iter().all(|b| a.priority != b.priority)),
        "section priorities must be unique"
    );
    if total_lines(&sections) > height {
        for s in &mut sections {
            s.gap_before = false;
        }
    }
    let mut order: Vec<u16> = sections.iter().map(|s| s.priority).collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    for p in order {
        let total = total_lines(&sections);
        if total <= height {
            break;
        }
        if let Some(i) = sections.iter().position(|s| s.priority == p) {
            sections[i].shrink(total - height);
            if total_lines(&sections) > height {
                sections.remove(i);
            }
        }
    }
    let mut lines = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 && s.gap_before {
            lines.push(Line::default());
        }
        lines.extend(s.head.iter().cloned());
        lines.extend(s.rows.iter().take(s.shown).cloned());
        if s.shown < s.total_rows {
            lines.push(Line::plain_text((s.more)(s.total_rows - s.shown)));
        }
    }
    lines.truncate(height);
    lines
}

/// The bytes that redraw the screen in place with `lines`, without a full-screen clear (which
/// flickers): cursor home, then each line, each erasing what the previous frame left on its
/// row, then everything below the last line erased.
///
/// Two details differ from the obvious "line + `ESC[K` + CR LF": each row is erased *before*
/// its text is written, and no line feed follows the last line. A line exactly as wide as the
/// terminal leaves the cursor in the "pending wrap" state on the last column, where an
/// erase-to-end-of-line erases that column too (xterm, alacritty), eating the `…` of every
/// truncated line; and a line feed after a line on the bottom row scrolls the whole screen up
/// by one each frame. The last line is preceded by `ESC[J` (erase to end of screen), which
/// clears its own row and the rows below in one go. Everything is written in one piece, so
/// the terminal never shows a half-erased row.
pub fn frame(lines: &[String]) -> String {
    let mut out = String::from("\x1b[H");
    if lines.is_empty() {
        out.push_str("\x1b[J");
        return out;
    }
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(if i + 1 == lines.len() {
            "\x1b[J"
        } else {
            "\x1b[K"
        });
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_shrinks_then_drops() {
        let line = |s: &str| Line::plain_text(s);
        let rows = |n: usize| (0..n).map(|i| line(&format!("r{i}"))).collect::<Vec<_>>();
        let build = || {
            vec![
                Section::fixed(0, false, line("top")),
                Section::elastic(1, true, vec![line("A")], rows(5), 5, 1, |n| format!("+{n}")),
                Section::elastic(2, true, vec![line("B")], rows(4), 4, 1, |n| format!("+{n}")),
            ]
        };
        let text = |h: usize| {
            layout(build(), h)
                .iter()
                .map(|l| l.render(80, false))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(text(14), "top  A r0 r1 r2 r3 r4  B r0 r1 r2 r3");
        assert_eq!(text(13), "top A r0 r1 r2 r3 r4 B r0 r1 r2 r3");
        assert_eq!(text(12), "top A r0 r1 r2 r3 r4 B r0 r1 r2 r3");
        assert_eq!(text(10), "top A r0 r1 r2 r3 r4 B r0 +3");
        assert_eq!(text(9), "top A r0 r1 r2 r3 r4");
        assert_eq!(text(5), "top A r0 r1 +3");
        assert_eq!(text(4), "top A r0 +4");
        // At its minimum (one row and "+4") A does not fit any more: it goes whole.
        assert_eq!(text(3), "top");
        assert_eq!(text(2), "top");
    }

    #[test]
    fn frame_redraws_in_place() {
        let lines = vec!["one".to_string(), "two".to_string(), "three".to_string()];
        assert_eq!(frame(&lines), "\x1b[H\x1b[Kone\r\n\x1b[Ktwo\r\n\x1b[Jthree");
        assert_eq!(frame(&[]), "\x1b[H\x1b[J");
        assert!(
            !frame(&lines).ends_with('\n'),
            "no scroll after the bottom row"
        );
    }
}
