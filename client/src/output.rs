//! What the client prints: results on stdout (text, or one JSON document with `--json`),
//! progress and notes on stderr — a bar on a terminal, plain lines otherwise, nothing with `-q`
//! or `--json`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
    terminal: bool,
}

impl Output {
    pub fn new(json: bool, quiet: bool) -> Output {
        Output {
            json,
            quiet,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Prints a command's result: `value` as JSON with `--json`, else `text` (unless empty).
    pub fn result(&self, text: &str, value: serde_json::Value) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).expect("JSON values serialise")
            );
        } else if !text.is_empty() {
            println!("{text}");
        }
    }

    /// A line of progress for people (stderr; not with `-q` or `--json`).
    pub fn note(&self, text: &str) {
        if !self.quiet && !self.json {
            eprintln!("{text}");
        }
    }

    /// A byte-progress bar on a terminal; hidden otherwise (the caller prints plain lines).
    pub fn bytes_bar(&self, total: u64, prefix: &str) -> ProgressBar {
        if self.quiet || self.json || !self.terminal {
            return ProgressBar::hidden();
        }
        // The name on its own line: the bar line must fit an 80-column terminal, or every
        // redraw wraps.
        eprintln!("{prefix}");
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "[{wide_bar:.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// `1.5 MiB`: sizes for people.
pub fn human_bytes(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}
