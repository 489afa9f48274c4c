//! Progress of a long run: a live bar on a terminal, plain lines anywhere else (a log, CI).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Steps of a run shown on stderr: a bar with the current stage when stderr is a terminal,
/// else one line per stage; nothing at all when quiet.
pub struct Progress {
    bar: ProgressBar,
    quiet: bool,
}

impl Progress {
    /// Progress over `total` steps; `quiet` shows nothing.
    pub fn new(total: u64, quiet: bool) -> Progress {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        // The template is a constant: it parses, and the default style is the fallback anyway.
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:24} {pos}/{len} [{elapsed_precise}, eta {eta}] {msg}",
        ) {
            bar.set_style(style);
        }
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(500));
        }
        Progress { bar, quiet }
    }

    /// The stage now running: the bar's message, or a line when there is no bar.
    pub fn stage(&self, message: &str) {
        if self.bar.is_hidden() {
            self.line(message);
        } else {
            self.bar.set_message(message.to_owned());
        }
    }

    /// A line that stays: above the bar, or on its own.
    pub fn line(&self, message: &str) {
        if self.quiet {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{message}");
        } else {
            self.bar.println(message);
        }
    }

    /// One step done.
    pub fn step(&self) {
        self.bar.inc(1);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
