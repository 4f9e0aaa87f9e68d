//! Findings for people: one block per finding, the secret underlined in
//! its line, colours when asked for, and a table of findings by rule at
//! the end.
//!
//! What an object holds is untrusted: its bytes are never written to the
//! terminal as they are. Control characters (escape sequences included),
//! invisible and bidirectional formatting characters and bytes that are
//! not UTF-8 are written as escapes, and tabs as spaces, so that the
//! output cannot drive the terminal and the underline stays under the
//! secret.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use unicode_width::UnicodeWidthChar;

use crate::sink::{EventSink, Finding, hex, redact};

/// Columns from one tab stop to the next.
const TAB_WIDTH: usize = 4;

const RULE: Style = AnsiColor::Red.on_default().bold();
const LOCATION: Style = Style::new().bold();
const GUTTER: Style = AnsiColor::Blue.on_default().bold();
const SECRET: Style = AnsiColor::Yellow.on_default().bold();
const UNDERLINE: Style = AnsiColor::Red.on_default().bold();
/// Escapes, cut marks and the fingerprint: there, but out of the way.
const QUIET: Style = Style::new().dimmed();
const PLAIN: Style = Style::new();

/// Writes findings for a person to read, one block each:
///
/// ```text
/// aws-access-token  src/config.py:12:11
///    12 │ aws_key = "AKIA…"  # prod
///       │            ^^^^^
///       = fingerprint 3f2a…
/// ```
///
/// The secret is shown in its line: up to
/// [`LineContext::MAX_SIDE`](crate::LineContext::MAX_SIDE) bytes on each
/// side, `…` where the line goes on. It is redacted as with `--redact`
/// (its first four characters, then `…`) unless
/// [`show_secrets`](HumanSink::show_secrets) is set; a whole secret that
/// spans lines is shown line by line. [`finish`](EventSink::finish)
/// writes the number of findings by rule (most first), and a total; it
/// writes nothing when there were none.
///
/// Colours (ANSI escapes) only with [`color`](HumanSink::color): deciding
/// whether the writer is a terminal that wants them is the caller's
/// business. Each block is flushed as it is written, for a person
/// watching a long scan. The format is for people and may change between
/// versions: programs read JSON Lines.
#[derive(Debug)]
pub struct HumanSink<W: Write + Send> {
    out: W,
    show_secrets: bool,
    color: bool,
    by_rule: BTreeMap<String, u64>,
    block: String,
}

impl<W: Write + Send> HumanSink<W> {
    /// A sink writing plain text to `out`, secrets redacted.
    pub fn new(out: W) -> Self {
        HumanSink {
            out,
            show_secrets: false,
            color: false,
            by_rule: BTreeMap::new(),
            block: String::with_capacity(512),
        }
    }

    /// Whether to show whole secrets rather than their first four
    /// characters.
    #[must_use]
    pub fn show_secrets(mut self, yes: bool) -> Self {
        self.show_secrets = yes;
        self
    }

    /// Whether to write colours (ANSI escapes).
    #[must_use]
    pub fn color(mut self, yes: bool) -> Self {
        self.color = yes;
        self
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> EventSink for HumanSink<W> {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        *self.by_rule.entry(f.rule_id.clone()).or_default() += 1;
        self.block.clear();
        let mut block = Painter {
            out: &mut self.block,
            color: self.color,
        };
        write_block(&mut block, f, self.show_secrets);
        self.out.write_all(self.block.as_bytes())?;
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        if !self.by_rule.is_empty() {
            self.block.clear();
            let mut table = Painter {
                out: &mut self.block,
                color: self.color,
            };
            write_table(&mut table, &self.by_rule);
            self.out.write_all(self.block.as_bytes())?;
        }
        self.out.flush()
    }
}

/// Appends text to a `String`, in a style when colours are on.
struct Painter<'a> {
    out: &'a mut String,
    color: bool,
}

impl Painter<'_> {
    fn paint(&mut self, style: Style, text: &str) {
        if self.color && !style.is_plain() {
            let _ = write!(self.out, "{style}{text}{style:#}");
        } else {
            self.out.push_str(text);
        }
    }
}

/// A line of an object as it is shown, built piece by piece: its text
/// (escapes in, tabs expanded) and its width in terminal columns so far.
struct ShownLine {
    text: String,
    width: usize,
    /// Where the secret's part of the line starts and ends, in columns.
    underline: (usize, usize),
}

impl ShownLine {
    fn new() -> Self {
        ShownLine {
            text: String::new(),
            width: 0,
            underline: (0, 0),
        }
    }

    /// Appends `bytes` of the object in `style`, made safe to show.
    fn push(&mut self, color: bool, style: Style, bytes: &[u8]) {
        let mut run = String::new();
        let flush = |line: &mut ShownLine, run: &mut String| {
            if !run.is_empty() {
                paint_into(&mut line.text, color, style, run);
                run.clear();
            }
        };
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '\t' {
                    let spaces = TAB_WIDTH - self.width % TAB_WIDTH;
                    run.extend(std::iter::repeat_n(' ', spaces));
                    self.width += spaces;
                } else if must_escape(c) {
                    flush(self, &mut run);
                    let escape = escape_char(c);
                    self.width += escape.len();
                    paint_into(&mut self.text, color, QUIET, &escape);
                } else {
                    run.push(c);
                    self.width += c.width().unwrap_or(0);
                }
            }
            if !chunk.invalid().is_empty() {
                flush(self, &mut run);
                let mut escape = String::new();
                for b in chunk.invalid() {
                    let _ = write!(escape, "\\x{b:02x}");
                }
                self.width += escape.len();
                paint_into(&mut self.text, color, QUIET, &escape);
            }
        }
        flush(self, &mut run);
    }

    /// Appends a mark of the program's own (`…`), one column wide.
    fn mark(&mut self, color: bool, text: &str) {
        paint_into(&mut self.text, color, QUIET, text);
        self.width += 1;
    }
}

fn paint_into(out: &mut String, color: bool, style: Style, text: &str) {
    Painter { out, color }.paint(style, text);
}

/// Characters that would act on the terminal, or hide what the line
/// says, rather than show: controls (C0, DEL, C1), and invisible or
/// direction-changing formatting characters.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// `\n`, `\r`, `\x1b`, `\u{202e}`.
fn escape_char(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        c if c.is_ascii() => format!("\\x{:02x}", c as u32),
        c => format!("\\u{{{:x}}}", c as u32),
    }
}

/// One finding's block, and the blank line that ends it.
fn write_block(out: &mut Painter<'_>, f: &Finding, show_secrets: bool) {
    let color = out.color;
    // Rule ids come from rule files, paths from the objects' names: shown
    // safely, as the objects' bytes are.
    let mut head = ShownLine::new();
    head.push(color, RULE, f.rule_id.as_bytes());
    head.text.push_str("  ");
    let mut location = f.path.to_vec();
    let _ = write!(location, ":{}:{}", f.line, f.column);
    head.push(color, LOCATION, &location);
    out.out.push_str(&head.text);
    out.out.push('\n');

    // The secret as shown, in the lines it spans.
    let redacted;
    let secret_lines: Vec<&[u8]> = if show_secrets {
        let mut lines: Vec<&[u8]> = f.secret.split(|&b| b == b'\n').collect();
        let ended = lines.len() - 1;
        for line in &mut lines[..ended] {
            *line = line.strip_suffix(b"\r").unwrap_or(line);
        }
        lines
    } else {
        redacted = redact(&String::from_utf8_lossy(&f.secret));
        vec![redacted.as_bytes()]
    };

    let context = &f.context;
    let count = secret_lines.len();
    let mut lines = Vec::with_capacity(count);
    for (i, part) in secret_lines.iter().enumerate() {
        let mut line = ShownLine::new();
        if i == 0 {
            if (context.before.len() as u64) < f.column.saturating_sub(1) {
                line.mark(color, "…");
            }
            line.push(color, PLAIN, &context.before);
        }
        let start = line.width;
        line.push(color, SECRET, part);
        line.underline = (start, line.width.max(start + 1));
        if i + 1 == count {
            line.push(color, PLAIN, &context.after);
            if context.after_cut {
                line.mark(color, "…");
            }
        }
        lines.push(line);
    }

    let last_number = f.line + count as u64 - 1;
    let gutter = last_number.to_string().len().max(2);
    let blank = " ".repeat(gutter);
    for (number, line) in (f.line..).zip(&lines) {
        out.paint(GUTTER, &format!(" {number:>gutter$} │"));
        out.out.push(' ');
        out.out.push_str(&line.text);
        out.out.push('\n');
        out.paint(GUTTER, &format!(" {blank} │"));
        let (from, to) = line.underline;
        out.out.push_str(&" ".repeat(from + 1));
        out.paint(UNDERLINE, &"^".repeat(to - from));
        out.out.push('\n');
    }
    out.paint(GUTTER, &format!(" {blank} ="));
    out.out.push(' ');
    out.paint(QUIET, &format!("fingerprint {}", hex(&f.fingerprint)));
    out.out.push_str("\n\n");
}

/// The table of findings by rule, most first, then by id; and the total.
fn write_table(out: &mut Painter<'_>, by_rule: &BTreeMap<String, u64>) {
    let mut rows: Vec<(&str, u64)> = by_rule.iter().map(|(r, &n)| (r.as_str(), n)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total: u64 = rows.iter().map(|r| r.1).sum();
    // Rule ids come from rule files: shown safely, as object bytes are.
    let ids: Vec<ShownLine> = rows
        .iter()
        .map(|(id, _)| {
            let mut shown = ShownLine::new();
            shown.push(out.color, PLAIN, id.as_bytes());
            shown
        })
        .collect();
    let id_width = ids.iter().map(|s| s.width).max().unwrap_or(0).max(5);
    let count_width = total.to_string().len().max(8);
    let rule_line = "─".repeat(id_width);
    let count_line = "─".repeat(count_width);

    out.paint(
        LOCATION,
        &format!("{:<id_width$}  {:>count_width$}", "rule", "findings"),
    );
    out.out.push('\n');
    out.paint(QUIET, &format!("{rule_line}  {count_line}"));
    out.out.push('\n');
    for (shown, (_, n)) in ids.iter().zip(&rows) {
        out.out.push_str(&shown.text);
        let pad = id_width - shown.width;
        let _ = writeln!(out.out, "{:pad$}  {n:>count_width$}", "");
    }
    out.paint(QUIET, &format!("{rule_line}  {count_line}"));
    out.out.push('\n');
    out.paint(
        LOCATION,
        &format!("{:<id_width$}  {total:>count_width$}", "total"),
    );
    out.out.push('\n');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::LineContext;

    fn finding(rule: &str, line: u64, column: u64, secret: &[u8], context: LineContext) -> Finding {
        Finding {
            rule_id: rule.into(),
            path: Arc::from(&b"src/config.py"[..]),
            line,
            column,
            start: 100,
            end: 100 + secret.len() as u64,
            secret: secret.to_vec(),
            fingerprint: [0x3f; 32],
            context,
        }
    }

    fn context(before: &[u8], after: &[u8], after_cut: bool) -> LineContext {
        LineContext {
            before: before.to_vec(),
            after: after.to_vec(),
            after_cut,
        }
    }

    fn render(findings: &[Finding], show_secrets: bool, color: bool) -> String {
        let mut sink = HumanSink::new(Vec::new())
            .show_secrets(show_secrets)
            .color(color);
        for f in findings {
            sink.finding(f).unwrap();
        }
        sink.finish().unwrap();
        String::from_utf8(sink.into_inner()).unwrap()
    }

    fn aws() -> Finding {
        finding(
            "aws-access-token",
            12,
            12,
            b"AKIAZ7Q3WV4ABCDXYZ2Q",
            context(b"aws_key = \"", b"\"  # prod", false),
        )
    }

    /// `text` without SGR sequences (`ESC [ digits and ; m`).
    fn without_colours(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("\x1b[") {
            out.push_str(&rest[..at]);
            let tail = &rest[at + 2..];
            let params = tail.find(|c: char| !c.is_ascii_digit() && c != ';');
            match params {
                Some(end) if tail[end..].starts_with('m') => rest = &tail[end + 1..],
                _ => {
                    out.push_str("\x1b[");
                    rest = tail;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The lines of the first block, without the fingerprint.
    fn first_block(text: &str) -> Vec<&str> {
        text.lines()
            .take_while(|l| !l.contains("fingerprint"))
            .collect()
    }

    #[test]
    fn the_secret_is_redacted_and_underlined_in_its_line() {
        let text = render(&[aws()], false, false);
        let fingerprint = "3f".repeat(32);
        assert_eq!(
            text,
            format!(
                "aws-access-token  src/config.py:12:12\n \
                 12 │ aws_key = \"AKIA…\"  # prod\n    \
                    │            ^^^^^\n    \
                    = fingerprint {fingerprint}\n\
                 \n\
                 rule              findings\n\
                 ────────────────  ────────\n\
                 aws-access-token         1\n\
                 ────────────────  ────────\n\
                 total                    1\n"
            )
        );
        assert!(!text.contains("AKIAZ7"));
    }

    #[test]
    fn show_secrets_shows_the_whole_secret() {
        let text = render(&[aws()], true, false);
        assert_eq!(
            first_block(&text)[1..],
            [
                " 12 │ aws_key = \"AKIAZ7Q3WV4ABCDXYZ2Q\"  # prod",
                "    │            ^^^^^^^^^^^^^^^^^^^^",
            ]
        );
    }

    #[test]
    fn cut_lines_are_marked_at_either_end() {
        // The line starts 20 bytes before what the context holds.
        let f = finding("r", 3, 31, b"SECRET", context(b"= ", b" more", true));
        let text = render(&[f], true, false);
        assert_eq!(
            first_block(&text)[1..],
            ["  3 │ …= SECRET more…", "    │    ^^^^^^"]
        );
    }

    #[test]
    fn tabs_are_expanded_so_that_the_underline_lines_up() {
        let f = finding("r", 1, 4, b"SEC\tRET", context(b"\ta\t", b"\t#", false));
        let text = render(&[f], true, false);
        assert_eq!(
            first_block(&text)[1..],
            ["  1 │     a   SEC RET #", "    │         ^^^^^^^",]
        );
    }

    #[test]
    fn control_characters_and_bytes_that_are_not_utf8_are_escaped() {
        let f = finding(
            "r",
            1,
            9,
            b"ab\x1b[2Jcd",
            context(b"\x00\xff\xfe \xe2\x80\xae=", b"\r\x07\xc3", false),
        );
        let text = render(std::slice::from_ref(&f), true, false);
        assert_eq!(
            first_block(&text)[1..],
            [
                "  1 │ \\x00\\xff\\xfe \\u{202e}=ab\\x1b[2Jcd\\r\\x07\\xc3",
                "    │                       ^^^^^^^^^^^",
            ]
        );
        // Nothing but the program's own colours reaches the terminal.
        let colored = render(&[f], true, true);
        let uncolored = without_colours(&colored);
        assert_ne!(uncolored, colored);
        assert!(
            !uncolored.contains(|c: char| c != '\n' && must_escape(c)),
            "{colored:?}"
        );
    }

    #[test]
    fn wide_characters_take_two_columns() {
        let f = finding(
            "r",
            1,
            11,
            b"SECRET",
            context("名前 = '".as_bytes(), b"'", false),
        );
        let text = render(&[f], true, false);
        assert_eq!(
            first_block(&text)[1..],
            ["  1 │ 名前 = 'SECRET'", "    │         ^^^^^^"]
        );
    }

    #[test]
    fn a_whole_secret_over_lines_is_shown_line_by_line() {
        let f = finding(
            "private-key",
            9,
            7,
            b"-----BEGIN\r\nAAAA\n-----END",
            context(b"key = ", b"; x", false),
        );
        let text = render(std::slice::from_ref(&f), true, false);
        assert_eq!(
            first_block(&text)[1..],
            [
                "  9 │ key = -----BEGIN",
                "    │       ^^^^^^^^^^",
                " 10 │ AAAA",
                "    │ ^^^^",
                " 11 │ -----END; x",
                "    │ ^^^^^^^^",
            ]
        );
        let text = render(&[f], false, false);
        assert_eq!(
            first_block(&text)[1..],
            ["  9 │ key = ----…; x", "    │       ^^^^^"]
        );
    }

    #[test]
    fn the_table_counts_by_rule_most_first_then_by_id() {
        let mut found = Vec::new();
        for (rule, n) in [("zeta", 1), ("github-pat", 3), ("alpha", 1), ("aws", 3)] {
            for _ in 0..n {
                found.push(finding(rule, 1, 1, b"x", LineContext::default()));
            }
        }
        let text = render(&found, false, false);
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("rule"))
            .collect();
        assert_eq!(
            table,
            [
                "rule        findings",
                "──────────  ────────",
                "aws                3",
                "github-pat         3",
                "alpha              1",
                "zeta               1",
                "──────────  ────────",
                "total              8",
            ]
        );
        assert_eq!(
            render(&[], false, true),
            "",
            "nothing found, nothing written"
        );
    }

    #[test]
    fn colours_only_when_asked() {
        assert!(!render(&[aws()], false, false).contains('\x1b'));
        let colored = render(&[aws()], false, true);
        assert!(
            colored.contains(&format!("{SECRET}AKIA…{SECRET:#}")),
            "{colored:?}"
        );
        assert!(colored.contains(&format!("{RULE}aws-access-token{RULE:#}")));
    }
}
