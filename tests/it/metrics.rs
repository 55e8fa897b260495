//! `GET /metrics`: the exposition is parsed (not grepped) and checked after known requests.

use crate::common;

use std::collections::BTreeMap;

use common::{Gateway, MockUpstream, client};
use serde_json::{Value, json};

/// `name{a="x",b="y"} value` lines -> (name, sorted labels) -> value.
fn parse(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (n.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.insert((name, labels), value.parse::<f64>().unwrap());
    }
    out
}

fn get(m: &BTreeMap<(String, BTreeMap<String, String>), f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    m.get(&(name.to_owned(), labels.clone())).copied().unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

#[tokio::test]
async fn metrics_change_as_expected_after_known_requests() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "[routes]\nmax_retries = 0\n").await;
    let question = "secret-question-text about the Falcon router";
    for _ in 0..2 {
        let (status, _) = gw.post_json("/v1/inference", &json!({"model": "ollama/llama3.2", "input": question})).await;
        assert_eq!(status, 200);
    }
    let (status, _) = gw.post_json("/v1/inference", &json!({"model": "openai/error-500", "input": question})).await;
    assert_eq!(status, 502);
    let (status, _, _) =
        gw.post("/v1/inference", &json!({"model": "anthropic/claude-3-5-haiku-20241022", "input": question, "stream": true})).await;
    assert_eq!(status, 200);
    assert_eq!(client().get(gw.url("/no/such/route/for-user-42")).send().await.unwrap().status().as_u16(), 404);

    let r = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(!text.contains("secret-question-text") && !text.contains("for-user-42"), "no free text in labels");
    let m = parse(&text);

    let http = |status: &str| get(&m, "uag_http_requests_total", &[("route", "/v1/inference"), ("method", "POST"), ("status", status)]);
    assert_eq!(http("200"), 3.0);
    assert_eq!(http("502"), 1.0);
    assert_eq!(get(&m, "uag_http_requests_total", &[("route", "unmatched"), ("method", "GET"), ("status", "404")]), 1.0);
    assert_eq!(
        get(&m, "uag_http_request_duration_seconds_count", &[("route", "/v1/inference"), ("method", "POST"), ("status", "200")]),
        3.0
    );
    assert_eq!(get(&m, "uag_upstream_request_duration_seconds_count", &[("provider", "ollama"), ("outcome", "ok")]), 2.0);
    assert_eq!(get(&m, "uag_upstream_request_duration_seconds_count", &[("provider", "openai"), ("outcome", "upstream_error")]), 1.0);
    assert_eq!(get(&m, "uag_tokens_total", &[("provider", "ollama"), ("direction", "input")]), 52.0);
    assert_eq!(get(&m, "uag_tokens_total", &[("provider", "ollama"), ("direction", "output")]), 18.0);
    assert_eq!(get(&m, "uag_tokens_total", &[("provider", "anthropic"), ("direction", "output")]), 11.0);
    assert_eq!(get(&m, "uag_time_to_first_token_seconds_count", &[("provider", "anthropic")]), 1.0);
    for provider in ["openai", "anthropic", "ollama", "vllm", "local"] {
        assert_eq!(get(&m, "uag_circuit_state", &[("provider", provider)]), 0.0, "{provider}");
    }
    assert_eq!(get(&m, "uag_knowledge_base_documents", &[]), 0.0);
    assert!(get(&m, "uag_process_resident_memory_bytes", &[]) > 1_000_000.0);
    assert_eq!(get(&m, "uag_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
}

/// Metric names a PromQL expression uses (`uag_*`), without the exposition suffixes.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("uag_") {
        let start = i + pos;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |e| start + e);
        if boundary {
            let mut name = &expr[start..end];
            for suffix in ["_bucket", "_count", "_sum", "_total"] {
                name = name.strip_suffix(suffix).unwrap_or(name);
            }
            names.push(name.to_owned());
        }
        i = end;
    }
    names
}

/// Every query of the provisioned Grafana dashboard and every alert rule refers to a metric uag
/// exports (its registered families, checked against a live /metrics).
#[tokio::test]
async fn dashboard_and_alert_queries_use_exported_metric_names() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, "").await;
    let exported: std::collections::BTreeSet<String> = gw.state.metrics.families().iter().cloned().collect();
    // The registered families are what /metrics serves: everything it shows is among them.
    let text = client().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = line.split_whitespace().next().unwrap();
        assert!(exported.contains(name.strip_suffix("_total").unwrap_or(name)), "{name} served but not registered");
    }
    assert!(exported.contains("uag_http_requests"), "{exported:?}");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/dashboards/uag.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if target["datasource"]["type"] == "prometheus" {
                exprs.push((panel["title"].as_str().unwrap().to_owned(), target["expr"].as_str().unwrap().to_owned()));
            }
        }
    }
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    exprs.extend(rules.lines().filter(|l| l.contains("uag_")).map(|l| ("alerts.yml".to_owned(), l.to_owned())));
    assert!(exprs.len() > 20, "the dashboard lost its panels");
    let mut used = std::collections::BTreeSet::new();
    for (title, expr) in &exprs {
        for name in metric_names(expr) {
            assert!(exported.contains(&name), "{title}: `{name}` in `{expr}` is not exported by uag; exported: {exported:?}");
            used.insert(name);
        }
    }
    // The dashboard covers the families an engineer needs at a glance.
    for family in [
        "uag_http_requests",
        "uag_upstream_request_duration_seconds",
        "uag_time_to_first_token_seconds",
        "uag_circuit_state",
        "uag_asr_real_time_factor",
        "uag_model_runtime_queue_depth",
        "uag_process_resident_memory_bytes",
        "uag_device_temperature_celsius",
        "uag_device_throttling",
        "uag_device_disk_free_bytes",
        "uag_device_pressure_ratio",
    ] {
        assert!(used.contains(family), "the dashboard has no panel for {family}");
    }
}

/// Device health: disk space and pressure of this machine, and temperature, CPU frequency and
/// the Raspberry Pi firmware's flags from a sysfs fixture (`[device] root`).
#[tokio::test]
async fn device_health_is_exported_from_the_kernel_and_from_a_pi_fixture() {
    let fixture = tempfile::tempdir().unwrap();
    let put = |path: &str, text: &str| {
        let p = fixture.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    put("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
    put("sys/class/thermal/thermal_zone0/temp", "83500\n");
    put("sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "1500000\n");
    // Under-voltage now, throttled since boot (as `vcgencmd get_throttled` prints 0x40001).
    put("sys/devices/platform/soc/soc:firmware/get_throttled", "40001\n");
    // The real kernel's PSI and meminfo, as the fixture's own.
    for file in ["proc/pressure/cpu", "proc/pressure/memory", "proc/pressure/io", "proc/meminfo"] {
        if let Ok(text) = std::fs::read_to_string(std::path::Path::new("/").join(file)) {
            put(file, &text);
        }
    }
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &format!("[device]\nroot = \"{}\"\n", fixture.path().display())).await;
    let text = client().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let m = parse(&text);
    assert_eq!(get(&m, "uag_device_temperature_celsius", &[("zone", "thermal_zone0"), ("kind", "cpu-thermal")]), 83.5);
    assert_eq!(get(&m, "uag_device_cpu_frequency_hertz", &[("cpu", "cpu0")]), 1.5e9);
    let flag = |condition: &str, when: &str| get(&m, "uag_device_throttling", &[("condition", condition), ("when", when)]);
    assert_eq!((flag("under_voltage", "now"), flag("throttled", "now"), flag("throttled", "since_boot")), (1.0, 0.0, 1.0));
    // This machine's own disk: the data directory's filesystem.
    let (free, size) = (get(&m, "uag_device_disk_free_bytes", &[]), get(&m, "uag_device_disk_size_bytes", &[]));
    assert!(size > 0.0 && free > 0.0 && free <= size, "{free} of {size}");
    if std::path::Path::new("/proc/pressure/memory").exists() {
        let some = get(&m, "uag_device_pressure_ratio", &[("resource", "memory"), ("kind", "some")]);
        assert!((0.0..=1.0).contains(&some), "{some}");
        get(&m, "uag_device_pressure_ratio", &[("resource", "cpu"), ("kind", "some")]);
    }
    assert!(get(&m, "uag_device_memory_available_bytes", &[]) > 0.0);
}
