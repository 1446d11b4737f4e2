//! What the dashboard's sources lose on their way into the binary: comment lines and
//! indentation (about a fifth of the compressed page). Shared by `build.rs`, which embeds the
//! result, and the tests, which compare what is served with it.
//!
//! Line-based and conservative: a line is dropped only if it is a comment as a whole (`//`, or
//! a `/* … */` block starting a line), and nothing is touched inside a template literal that
//! spans lines (its backticks are counted), so strings and regular expressions stay as written.

/// `src` (JavaScript when `js`, else CSS) without comment lines and leading whitespace.
pub fn strip(src: &str, js: bool) -> String {
    let mut out = String::with_capacity(src.len());
    let mut in_block = false;
    let mut in_template = false;
    for line in src.lines() {
        if in_template {
            out.push_str(line);
            out.push('\n');
            in_template = line.matches('`').count() % 2 == 0;
            continue;
        }
        let t = line.trim_start();
        if in_block {
            if t.contains("*/") {
                in_block = false;
                if !t.trim_end().ends_with("*/") {
                    // Code after a block comment's end: keep the line whole.
                    out.push_str(t);
                    out.push('\n');
                }
            }
            continue;
        }
        if (js && t.starts_with("//")) || t.is_empty() {
            continue;
        }
        if t.starts_with("/*") {
            match t.find("*/") {
                Some(end) if t[end + 2..].trim().is_empty() => continue,
                Some(_) => {}
                None => {
                    in_block = true;
                    continue;
                }
            }
        }
        out.push_str(t);
        out.push('\n');
        if js && t.matches('`').count() % 2 == 1 {
            in_template = true;
        }
    }
    out
}
