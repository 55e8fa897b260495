//! The mock upstream of the test suite as a standalone server, for benchmarks and manual
//! trials: `cargo run --release --example mock_upstream -- 127.0.0.1:18081`.
//! It speaks the OpenAI, Anthropic and Ollama wire formats (see tests/it/common/mock_upstream.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../tests/it/common/mock_upstream.rs"]
mod mock_upstream;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18081".into());
    let mock = mock_upstream::MockUpstream::start_on(&addr, false).await;
    println!("mock upstream listening on http://{}", mock.addr);
    let _ = tokio::signal::ctrl_c().await;
}
