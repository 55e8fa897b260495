//! One crypto library for every TLS connection uag makes or accepts: ring.
//!
//! reqwest is built without a crypto provider of its own (`rustls-no-provider`), so that the
//! binary links ring alone instead of ring and aws-lc-rs side by side (576 KiB of an
//! aarch64 binary that must fit 20 MiB). A reqwest client then takes rustls's process default,
//! which [`install_crypto_provider`] sets; [`http_client_builder`] does that first, so every
//! client in uag is built through it.

/// Makes ring the process's default rustls crypto provider. Idempotent: a provider already
/// installed (by an earlier call, or by a test harness) is kept.
pub fn install_crypto_provider() {
    // The only error is "already installed", which is what this call wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder whose TLS uses the process's provider (installed here).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}
