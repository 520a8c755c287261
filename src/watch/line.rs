//! Styled lines: text in pieces, coloured only when printed.

use super::text::{char_width, is_unsafe, str_width};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Bold,
    Dim,
    Green,
    Red,
    Yellow,
}

impl Style {
    fn sgr(self) -> Option<&'static str> {
        match self {
            Style::Plain => None,
            Style::Bold => Some("1"),
            Style::Dim => Some("2"),
            Style::Green => Some("32"),
            Style::Red => Some("31"),
            Style::Yellow => Some("33"),
        }
    }
}

/// A line as styled pieces. Styles are applied only when printing, per piece and each reset
/// at its end, so truncation counts visible characters only and can never leave a colour
/// running into the next line.
#[derive(Debug, Clone, Default)]
pub struct Line {
    spans: Vec<(Style, String)>,
}

impl Line {
    pub fn styled(style: Style, s: impl Into<String>) -> Line {
        let mut l = Line::default();
        l.push(style, s);
        l
    }

    pub fn plain_text(s: impl Into<String>) -> Line {
        Line::styled(Style::Plain, s)
    }

    pub fn push(&mut self, style: Style, s: impl Into<String>) -> &mut Line {
        let s = s.into();
        if !s.is_empty() {
            self.spans.push((style, s));
        }
        self
    }

    pub fn plain(&mut self, s: impl Into<String>) -> &mut Line {
        self.push(Style::Plain, s)
    }

    pub fn width(&self) -> usize {
        self.spans.iter().map(|(_, s)| str_width(s)).sum()
    }

    /// Drops trailing spaces (table rows padded for columns that turned out empty).
    pub fn trim_end(&mut self) {
        while let Some((_, s)) = self.spans.last_mut() {
            let t = s.trim_end_matches(' ').len();
            s.truncate(t);
            if !s.is_empty() {
                break;
            }
            self.spans.pop();
        }
    }

    /// The line in at most `width` display columns, ending in `…` when cut.
    pub fn render(&self, width: usize, color: bool) -> String {
        let cut = self.width() > width;
        let budget = if cut { width.saturating_sub(1) } else { width };
        let mut out = String::new();
        let mut used = 0;
        for (style, text) in &self.spans {
            let mut piece = String::new();
            let mut full = false;
            for c in text.chars() {
                let c = if is_unsafe(c) { '\u{FFFD}' } else { c };
                let w = char_width(c);
                if used + w > budget {
                    full = true;
                    break;
                }
                used += w;
                piece.push(c);
            }
            if !piece.is_empty() {
                match style.sgr().filter(|_| color) {
                    Some(sgr) => out.push_str(&format!("\x1b[{sgr}m{piece}\x1b[0m")),
                    None => out.push_str(&piece),
                }
            }
            if full {
                break;
            }
        }
        if cut && width > 0 {
            out.push('…');
        }
        out
    }
}
