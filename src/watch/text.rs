//! Text from payloads, made safe and measured for the terminal.
//!
//! Nothing a payload contains may reach the terminal as a control sequence: every string
//! taken from a message goes through [`clean`] when it is stored (bounded, controls
//! replaced), and [`super::line::Line::render`] replaces any unsafe character again when it
//! prints. Widths are display columns (a CJK character takes two), not chars or bytes.

use unicode_width::UnicodeWidthChar;

/// Placeholder for a value the device did not send (or sent with an unexpected type).
pub const DASH: &str = "–";
/// Between the parts of a line.
pub const SEP: &str = " · ";
/// Characters that must never reach the terminal from a payload: C0/C1 controls (ESC starts
/// escape sequences) and the bidi controls that reorder what follows them.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Payload text made safe and short: whitespace controls become spaces, other unsafe
/// characters `�`, and at most `max_chars` characters are kept (then `…`).
pub fn clean(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars + 4));
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        out.push(match c {
            '\n' | '\r' | '\t' => ' ',
            c if is_unsafe(c) => '\u{FFFD}',
            c => c,
        });
    }
    out
}

/// Display columns of one character as the renderer prints it.
pub fn char_width(c: char) -> usize {
    if is_unsafe(c) {
        1 // printed as `�`
    } else {
        c.width().unwrap_or(0)
    }
}

pub fn str_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` cut to `max` display columns, ending in `…` when cut.
pub fn fit(s: &str, max: usize) -> String {
    if str_width(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w + 1 > max {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// Left-aligned in `w` display columns (`format!` pads by chars, not columns).
pub fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(str_width(s))))
}

pub fn pad_left(s: &str, w: usize) -> String {
    format!("{}{s}", " ".repeat(w.saturating_sub(str_width(s))))
}

pub fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| DASH.to_string(), f)
}

pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `7.3 ms` below 10 ms, `38 ms` above: a tenth of a millisecond is noise on a 40 ms model.
pub fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// A duration, two units at most: `45s`, `12m05s`, `3h12m`, `2d04h`.
pub fn fmt_span(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// How long ago, one unit: `3 s ago`, `2 min ago`, `5 h ago`, `3 d ago`. A time in the
/// future (the wall clock stepped back) reads as `0 s ago`.
pub fn age(now_ms: i64, at_ms: i64) -> String {
    let s = now_ms.saturating_sub(at_ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// `s`, or the dash when it is empty (a field an older daemon did not send).
pub fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        DASH
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_760_000_000_000;

    #[test]
    fn ages_and_spans() {
        assert_eq!(age(T0, T0 + 5_000), "0 s ago");
        assert_eq!(age(T0, T0 - 59_999), "59 s ago");
        assert_eq!(age(T0, T0 - 60_000), "1 min ago");
        assert_eq!(age(T0, T0 - 3_600_000), "1 h ago");
        assert_eq!(age(T0, T0 - 172_800_000), "2 d ago");
        assert_eq!(age(i64::MAX, i64::MIN), "106751991167 d ago");
        assert_eq!(fmt_span(0), "0s");
        assert_eq!(fmt_span(725), "12m05s");
        assert_eq!(fmt_span(11_520), "3h12m");
        assert_eq!(fmt_span(190_000), "2d04h");
        assert_eq!(fmt_ms(7.25), "7.2 ms");
        assert_eq!(fmt_ms(38.4), "38 ms");
    }

    #[test]
    fn cleaning_and_fitting() {
        assert_eq!(
            clean("a\nb\tc\u{1b}[2J\u{202e}x", 80),
            "a b c\u{FFFD}[2J\u{FFFD}x"
        );
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(fit("値が大きすぎます", 7), "値が大…");
        assert!(str_width(&fit("値が大きすぎます", 7)) <= 7);
        assert_eq!(fit("short", 10), "short");
        assert_eq!(pad("値", 4), "値  ");
        assert_eq!(pad_left("7", 3), "  7");
        assert_eq!(or_dash(""), DASH);
    }
}
