//! systemd integration: socket activation (`uag.socket`), readiness and watchdog
//! notifications (`Type=notify`, `WatchdogSec=`). Everything is a no-op outside systemd.

use std::time::Duration;

/// The listening socket systemd passed in (socket activation), if any.
pub(crate) fn activated_listener() -> std::io::Result<Option<tokio::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    match fds.take_tcp_listener(0)? {
        Some(listener) => {
            listener.set_nonblocking(true)?;
            Ok(Some(tokio::net::TcpListener::from_std(listener)?))
        }
        None => Ok(None),
    }
}

/// READY=1 once the listener is bound and the knowledge base is open.
pub(crate) fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify READY failed (not under systemd?)");
    }
}

pub(crate) fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Pings the watchdog at half its interval from a runtime task: a wedged runtime stops
/// pinging and systemd restarts the service.
pub(crate) fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else { return };
    let every = (interval / 2).max(Duration::from_millis(500));
    tracing::info!(interval_ms = interval.as_millis() as u64, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                tracing::warn!(error = %e, "watchdog ping failed");
            }
        }
    });
}
