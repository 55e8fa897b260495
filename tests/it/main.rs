//! The end-to-end tests of `uag`: one test binary with a module per area (as meilisearch and
//! tensorzero lay theirs out), so candle, whisper.cpp and ONNX Runtime are linked once, not once
//! per file. `cargo test --test it auth::` runs one area.
//!
//! Every test starts what it needs for real: the gateway on `127.0.0.1:0` (`common::Gateway`),
//! the mock upstream, Redis, NGINX, Chromium, the `uag` binary itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod anthropic_compat;
mod auth;
mod bad_input;
mod cache;
mod cli;
mod crash_ingest;
mod hardening;
mod images;
mod kiosk_browser;
mod knowledge_base;
mod local_models;
mod logs;
mod metrics;
mod nginx_proxy;
mod openai_compat;
mod policy;
mod providers;
mod rate_limits;
mod routing;
mod secrets_in_logs;
mod tls;
mod tool_calls;
mod voice;
mod websocket;
mod wyoming;
