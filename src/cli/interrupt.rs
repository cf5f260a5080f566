//! Ctrl-C (SIGINT) and SIGTERM as a clean stop: the first signal asks the running command to
//! stop as `--duration` would (a run processes what it read, writes its outputs and, with
//! `--savepoint`, its savepoint; the demo and collectors flush and report), a second one ends
//! the process at once (exit status 130).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once, Weak};
use std::time::Duration;

/// Signals received.
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic add and, the second time, _exit.
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: _exit is async-signal-safe and ends the process without running anything.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the handlers (once per process; [`interrupted`] then tells of a signal).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only touches an atomic and calls _exit (both signal-safe).
        unsafe {
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
    });
}

/// Whether Ctrl-C or SIGTERM arrived since the handlers were installed.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// Sets `stop` when Ctrl-C or SIGTERM arrives (a thread looks every 50 ms, for as long as
/// anything else holds `stop`), saying so on stderr.
pub fn stop_on_signal(stop: &Arc<AtomicBool>) {
    install();
    let weak: Weak<AtomicBool> = Arc::downgrade(stop);
    std::thread::spawn(move || loop {
        let Some(stop) = weak.upgrade() else { return };
        if interrupted() {
            eprintln!("stopping (interrupt again to exit at once)");
            stop.store(true, Ordering::Relaxed);
            return;
        }
        drop(stop);
        std::thread::sleep(Duration::from_millis(50));
    });
}
