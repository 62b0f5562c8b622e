//! Helpers the console's browser tests share: headless Chromium through
//! chromedriver (the Debian `chromium` and `chromium-driver` packages),
//! waits on elements and their text, and numbered screenshots.

#![allow(dead_code, clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common::{free_port, spawn_quiet, KillOnDrop};

/// How long any one wait in the browser may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// The browser's screenshots, one per step.
pub struct Shots {
    pub dir: PathBuf,
    pub n: usize,
}

impl Shots {
    pub async fn take(&mut self, browser: &Client, step: &str) -> PathBuf {
        self.n += 1;
        let path = self.dir.join(format!("{:02}-{step}.png", self.n));
        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// Waits until the element `css` exists and its text satisfies `ok`;
/// returns the text.
pub async fn text_of(browser: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if ok(&text) {
                    return text;
                }
                last = text;
            }
        }
        assert!(
            started.elapsed() < WAIT,
            "{css}: never as expected; last text {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn scroll_to(browser: &Client, id: &str) {
    browser
        .execute(
            "document.getElementById(arguments[0]).scrollIntoView()",
            vec![json!(id)],
        )
        .await
        .unwrap();
}

pub async fn present(browser: &Client, css: &str) -> bool {
    browser.find(Locator::Css(css)).await.is_ok()
}

pub async fn click(browser: &Client, css: &str) {
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

pub async fn type_into(browser: &Client, css: &str, text: &str) {
    let field = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

pub async fn start_browser() -> (KillOnDrop, Client) {
    let driver_binary = which("chromedriver").expect(
        "chromedriver is not installed: apt-get install chromium chromium-driver (.ci/run does)",
    );
    let port = free_port();
    let driver = spawn_quiet(
        Command::new(driver_binary)
            .arg(format!("--port={port}"))
            // Times on the pages in UTC, whatever the machine's zone.
            .env("TZ", "UTC"),
    );
    let mut options = json!({
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1",
        ],
    });
    if let Some(chromium) = which("chromium") {
        options["binary"] = json!(chromium);
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let browser = loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(browser) => break browser,
            Err(e) => {
                assert!(started.elapsed() < WAIT, "chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    (driver, browser)
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}
