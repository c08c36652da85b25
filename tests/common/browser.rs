//! Headless Chromium driven through ChromeDriver (Debian's chromium and
//! chromium-driver; installed when missing), for the console's tests.

use fantoccini::{Client, ClientBuilder};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A ChromeDriver and one browser session, both ended when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and a headless Chromium
    /// with a new empty profile. The flags keep Chromium from reaching for
    /// Google's services, which a closed network refuses.
    pub async fn start() -> Browser {
        // fantoccini's rustls needs a process-wide provider chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chromium =
            super::imap::debian::program(&["/usr/bin/chromium"], &["chromium", "chromium-driver"]);
        let chromedriver =
            super::imap::debian::program(&["/usr/bin/chromedriver"], &["chromium-driver"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::rustls()
                .expect("tls")
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        driver,
                        profile,
                    };
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not start a Chromium session: {last:?}");
    }

    /// Ends the browser session (and Chromium with it), then ChromeDriver.
    pub async fn close(self) {
        let client = self.client.clone();
        let _ = client.close().await;
    }

    /// Clicks the element `locator` finds.
    pub async fn click(&self, locator: fantoccini::Locator<'_>) {
        let element = self
            .client
            .find(locator)
            .await
            .expect("the element to click");
        element.click().await.expect("a click");
    }

    /// Saves a screenshot of the page as `target/console-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The text of the element `css` selects. A live page may swap its
    /// content between finding an element and reading it; then it is
    /// found again.
    pub async fn text_of(&self, css: String) -> String {
        for _ in 0..50 {
            if let Ok(element) = self.client.find(fantoccini::Locator::Css(&css)).await
                && let Ok(text) = element.text().await
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no element {css} to read");
    }

    /// The page's text, waiting up to `seconds` until `ready` holds for it.
    pub async fn text_until(
        &self,
        seconds: u64,
        what: &str,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        for _ in 0..seconds * 10 {
            // Between pages there may be no <main> for a moment.
            last = match self.client.find(fantoccini::Locator::Css("main")).await {
                Ok(main) => main.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if ready(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("waited {seconds}s for {what}; the page says:\n{last}");
    }
}

impl Drop for Browser {
    /// A test that failed never reached `close`: ChromeDriver's death does
    /// not end Chromium, so its processes are found by the profile folder
    /// only they use.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.profile.path())
            .status();
    }
}
