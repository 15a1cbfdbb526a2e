//! What the commands print on stdout. `println!` panics when the reader went away
//! (`ralph doctor | head -1`); [`outln!`](crate::outln) and [`out!`](crate::out) stop printing
//! instead, and the command finishes and exits with its own code. ralph keeps SIGPIPE ignored
//! (Rust's default) because `ralph run` writes prompts into agents' pipes: a dying agent must
//! not kill it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout failed: the rest of the output has nowhere to go.
static GONE: AtomicBool = AtomicBool::new(false);

/// Writes to stdout; after a failed write (a closed pipe, a full disk behind a redirect) the
/// rest of the output is dropped.
pub fn write(args: std::fmt::Arguments<'_>) {
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_fmt(args).and_then(|()| out.flush()).is_err() {
        GONE.store(true, Ordering::Relaxed);
    }
}

/// `println!` that ends quietly on a closed stdout.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that ends quietly on a closed stdout.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}
