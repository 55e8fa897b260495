//! The kiosk page in a real browser: headless Chromium (Debian's `chromium`, driven over
//! WebDriver by Debian's `chromedriver`) opens `/`, its fake microphone plays a question that
//! Piper spoke, and the page must show the transcript, the streamed answer with its sources
//! (clickable), and play the spoken answer. A screenshot goes to the test's output folder
//! (`target/tmp/kiosk/`). Then the error states: a denied microphone and a server that went
//! away are shown on the page.
//!
//! `scripts/setup.sh --test` installs chromium and chromium-driver; without them the test fails
//! and says so (it never skips).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Gateway, MockUpstream, client, models_toml, word_error_rate};
use serde_json::{Value, json};

const MODELS: &[&str] = &["whisper-tiny.en", "smollm2-135m-instruct", "piper-en_US-joe-medium", "onnxruntime"];
const QUESTION: &str = "When does the greenhouse open the roof vents?";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiosk");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver leads its own process group; the browsers it started are in it too, so a
        // failed test (no session close) leaves no Chromium behind.
        let _ = Command::new("kill").arg("-KILL").arg("--").arg(format!("-{}", self.child.id())).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child =
        Command::new("chromedriver").arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(
            |e| panic!("cannot start chromedriver ({e}): run `scripts/setup.sh --test` (Debian packages chromium, chromium-driver)"),
        );
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client().get(format!("{}/status", driver.url)).send().await
            && let Ok(status) = r.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One browser session over the W3C WebDriver protocol.
struct Browser {
    base: String,
}

impl Browser {
    async fn open(driver: &Driver, extra_args: &[String]) -> Self {
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1100,900",
            "--autoplay-policy=no-user-gesture-required",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend_from_slice(extra_args);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let r: Value = client().post(format!("{}/session", driver.url)).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {r}"));
        Self { base: format!("{}/session/{id}", driver.url) }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r: Value = client().post(format!("{}{path}", self.base)).json(&body).send().await.unwrap().json().await.unwrap();
        if r["value"]["error"].is_string() {
            panic!("webdriver {path}: {r}");
        }
        r["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    async fn eval(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []})).await
    }

    async fn click(&self, css: &str) {
        let element = self.post("/element", json!({"using": "css selector", "value": css})).await;
        let id = element[ELEMENT].as_str().unwrap().to_owned();
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// Polls `script` (an expression) until it is truthy.
    async fn wait_for(&self, script: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(&format!("return {script};")).await;
            if !(value.is_null() || value == false || value == "" || value == 0) {
                return value;
            }
            if Instant::now() > deadline {
                let state = self.eval("return JSON.stringify({data: document.body.dataset, status: document.getElementById('status').textContent, error: document.getElementById('error').textContent})").await;
                panic!("timed out waiting for `{script}`; page state: {state}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.eval(&format!("return document.querySelector('{css}').textContent")).await.as_str().unwrap_or_default().to_owned()
    }

    async fn screenshot(&self, path: &Path) {
        let r: Value = client().get(format!("{}/screenshot", self.base)).send().await.unwrap().json().await.unwrap();
        let png = base64::engine::general_purpose::STANDARD.decode(r["value"].as_str().unwrap()).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        std::fs::write(path, png).unwrap();
    }

    async fn close(self) {
        let _ = client().delete(&self.base).send().await;
    }
}

#[tokio::test]
async fn kiosk_page_answers_a_spoken_question_in_a_real_browser() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::with_mock(&mock, &models_toml(MODELS)).await;
    let doc = "# Greenhouse\n\nThe greenhouse controller is called Fernwood. The greenhouse opens the roof vents when the \
               temperature passes 28 degrees Celsius. The greenhouse waters the tomatoes every morning at six.\n";
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::text(doc).file_name("greenhouse.md"));
    assert!(client().post(gw.url("/v1/documents")).multipart(form).send().await.unwrap().status().is_success());

    // The fake microphone: half a second of quiet, the question, then four seconds of quiet in
    // which the test taps to send (Chromium loops the file; the page stops sending at the tap).
    let speech = client()
        .post(gw.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "voice": "alloy", "input": QUESTION, "response_format": "pcm"}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut pcm = vec![0u8; 22_050];
    pcm.extend_from_slice(&speech);
    pcm.extend(vec![0u8; 22_050 * 2 * 4]);
    let samples: Vec<f32> = pcm.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect();
    let wav_path = output_dir().join("question.wav");
    std::fs::write(&wav_path, uag_models::audio::encode_wav_pcm16(&samples, 22_050)).unwrap();

    let driver = start_driver().await;
    let browser = Browser::open(
        &driver,
        &[
            "--use-fake-ui-for-media-stream".into(),
            "--use-fake-device-for-media-stream".into(),
            format!("--use-file-for-fake-audio-capture={}", wav_path.display()),
        ],
    )
    .await;
    browser.goto(&gw.url("/")).await;
    browser.wait_for("document.body.dataset.state === 'ready'", Duration::from_secs(20)).await;
    assert_eq!(browser.eval("return document.title").await, "uag kiosk");

    // A tap starts listening; push-to-talk ends the question with the second tap, once the
    // question has been spoken (inside the quiet after it, before Chromium loops the file).
    browser.click("#talk").await;
    browser.wait_for("document.body.dataset.mic === 'ok'", Duration::from_secs(20)).await;
    browser.wait_for("document.body.dataset.heard === '1'", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs_f64(speech.len() as f64 / (22_050.0 * 2.0) + 1.0)).await;
    browser.click("#talk").await;
    browser.wait_for("document.body.dataset.done === '1'", Duration::from_secs(240)).await;

    let transcript = browser.text("#transcript").await;
    assert!(word_error_rate(QUESTION, &transcript) <= 0.25, "the page shows {transcript:?}");
    let answer = browser.text("#answer").await;
    assert!(answer.split_whitespace().count() >= 3, "answer {answer:?}");
    let sources = browser.text("#sources").await;
    assert!(sources.contains("greenhouse"), "sources {sources:?}");
    // A source opens its passage when clicked.
    assert_eq!(browser.eval("return document.querySelector('#sources .snippet').hidden").await, true);
    browser.click("#sources .source-title").await;
    let passage = browser
        .eval("return document.querySelector('#sources .snippet').hidden ? '' : document.querySelector('#sources .snippet').textContent")
        .await;
    assert!(passage.as_str().unwrap().contains("roof vents"), "passage {passage}");
    // The spoken answer was decoded and played to its end.
    browser.wait_for("Number(document.body.dataset.audioPlayed) >= 1", Duration::from_secs(60)).await;
    assert_eq!(browser.eval("return document.getElementById('error').hidden").await, true, "no error shown");
    let timings = browser.text("#timings").await;
    assert!(timings.contains("first audio"), "{timings}");
    browser.screenshot(&output_dir().join("kiosk.png")).await;
    browser.close().await;

    // A denied microphone is shown, and typing still works.
    let denied = Browser::open(&driver, &["--use-fake-device-for-media-stream".into(), "--deny-permission-prompts".into()]).await;
    denied.goto(&gw.url("/")).await;
    denied.wait_for("document.body.dataset.state === 'ready'", Duration::from_secs(20)).await;
    denied.click("#talk").await;
    denied.wait_for("document.body.dataset.mic === 'denied'", Duration::from_secs(20)).await;
    let error = denied.text("#error").await;
    assert!(error.contains("Microphone access was denied"), "{error}");
    denied.screenshot(&output_dir().join("kiosk-mic-denied.png")).await;

    // The server goes away: the page says so and keeps retrying.
    gw.stop().await.unwrap();
    denied.wait_for("document.body.dataset.state === 'offline'", Duration::from_secs(20)).await;
    let error = denied.text("#error").await;
    assert!(error.contains("Cannot reach the appliance"), "{error}");
    assert_eq!(denied.eval("return document.getElementById('talk').disabled").await, true);
    denied.screenshot(&output_dir().join("kiosk-offline.png")).await;
    denied.close().await;
}

/// The kiosk page on a server that requires a key: a wrong key is "Not authorised" (not "Cannot
/// reach the appliance", retried every second), the right one connects, and the key leaves the
/// address bar once read.
#[tokio::test]
async fn kiosk_page_says_a_refused_key_is_refused_and_hides_a_good_one() {
    use sha2::Digest;
    const KEY: &str = "uag_kiosk-browser-test-key-0123456789";
    let digest: String = sha2::Sha256::digest(KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let mock = MockUpstream::start().await;
    let auth = format!("[auth]\nrequired = true\n[[auth.api_keys]]\nname = \"kiosk\"\nsha256 = \"{digest}\"\nroles = [\"kiosk\"]\n");
    let gw = Gateway::with_mock(&mock, &auth).await;
    let driver = start_driver().await;

    let browser = Browser::open(&driver, &[]).await;
    browser.goto(&gw.url("/?access_token=uag_a-guessed-key-000000000000")).await;
    browser.wait_for("document.body.dataset.state === 'unauthorised'", Duration::from_secs(20)).await;
    let error = browser.text("#error").await;
    assert!(error.contains("Not authorised") && !error.contains("Cannot reach"), "{error}");
    assert_eq!(browser.eval("return document.getElementById('talk').disabled").await, true);
    // It does not hammer the server: the refused key is asked again only once a minute.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(browser.eval("return document.body.dataset.state").await, "unauthorised");
    browser.screenshot(&output_dir().join("kiosk-unauthorised.png")).await;

    browser.goto(&gw.url(&format!("/?access_token={KEY}"))).await;
    browser.wait_for("document.body.dataset.state === 'ready'", Duration::from_secs(20)).await;
    assert_eq!(browser.eval("return location.search").await, "", "the key left the address bar");
    // A reload (the address no longer holds the key) keeps working from the tab's storage.
    browser.eval("location.reload(); return true").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.wait_for("document.body.dataset.state === 'ready'", Duration::from_secs(20)).await;
    browser.close().await;
}
