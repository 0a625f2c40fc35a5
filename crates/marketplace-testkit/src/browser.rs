//! A chromedriver of the test's own, for driving headless Chromium over
//! WebDriver; stopped, with the browser it started and the directory of
//! that browser's profile, when the fixture is dropped.
//!
//! The fixture hands out the WebDriver URL and the capabilities of a new
//! session; the test connects its own WebDriver client with them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::Backend;

/// How long chromedriver may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request to chromedriver, and the end of its Chromium, may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A running chromedriver and a fresh directory for the browser's profile,
/// configuration and caches.
#[derive(Debug)]
pub struct WebDriver {
    child: Child,
    address: Option<SocketAddr>,
    chromium: PathBuf,
    dir: PathBuf,
}

/// Starts chromedriver on a free loopback port and waits until it is ready
/// for sessions; `None` when Chromium is not configured (see the crate docs).
///
/// # Panics
///
/// When the browser is configured but chromedriver does not start.
pub async fn webdriver() -> Option<WebDriver> {
    let chromium = PathBuf::from(Backend::Chromium.locate()?);
    let chromedriver = Backend::Chromedriver.locate()?;
    let dir = std::env::temp_dir().join(crate::unique_name("marketplace-chromium-"));
    // Port 0: chromedriver binds a free IPv4 port itself and prints which.
    // It then binds the same port on IPv6 and exits when something else
    // holds that one, so a start that ends before printing is retried.
    let mut attempt = 0;
    let (mut driver, port) = loop {
        attempt += 1;
        // A failed attempt's driver removed the directory when dropped.
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let (driver, port) = start_chromedriver(&chromedriver, &chromium, &dir).await;
        match port {
            Some(port) => break (driver, port),
            None if attempt < START_ATTEMPTS => {
                eprintln!("testkit: {chromedriver} exited before serving; starting it again");
            }
            None => panic!(
                "{chromedriver} exited without saying which port it serves on, {START_ATTEMPTS} times"
            ),
        }
    };
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    driver.address = Some(address);
    crate::eventually(
        "chromedriver to answer GET /status with ready: true",
        START_TIMEOUT,
        || async move {
            let status = tokio::task::spawn_blocking(move || request(address, "GET", "/status"))
                .await
                .ok()?
                .ok()?;
            (status["value"]["ready"] == true).then_some(())
        },
    )
    .await;
    Some(driver)
}

/// How many times chromedriver is started before the fixture gives up.
const START_ATTEMPTS: u32 = 5;

/// Starts one chromedriver; with the port it printed, or `None` when it
/// exited before printing one.
async fn start_chromedriver(
    chromedriver: &str,
    chromium: &Path,
    dir: &Path,
) -> (WebDriver, Option<u16>) {
    let mut child = Command::new(chromedriver)
        .arg("--port=0")
        // Chromium keeps crash reports and caches under these, in the home
        // directory otherwise; the browser inherits chromedriver's
        // environment.
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {chromedriver}: {e}"));
    let stdout = child.stdout.take().expect("stdout is piped");
    let driver = WebDriver {
        child,
        address: None,
        chromium: chromium.to_owned(),
        dir: dir.to_owned(),
    };
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end, so that chromedriver never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = reported_port(&line) {
                let _ = sender.send(port);
            }
        }
    });
    let port = crate::eventually("chromedriver to print its port", START_TIMEOUT, || {
        let port = match receiver.try_recv() {
            Ok(port) => Some(Some(port)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(None),
        };
        async move { port }
    })
    .await;
    (driver, port)
}

impl WebDriver {
    /// The URL a WebDriver client connects to.
    pub fn url(&self) -> String {
        let address = self.address.expect("chromedriver reported its address");
        format!("http://{address}")
    }

    /// The capabilities of a new session: the configured Chromium, headless,
    /// in a profile of this fixture's own.
    pub fn capabilities(&self) -> Map<String, Value> {
        capabilities(&self.chromium, &self.dir.join("profile"))
    }
}

fn capabilities(chromium: &Path, profile: &Path) -> Map<String, Value> {
    let args: Vec<String> = [
        "--headless=new",
        // Tests run as root and in containers, where the sandbox cannot start.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        // Without these three Chromium calls Google's servers at start-up,
        // and on a closed network it hangs waiting for them.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,800",
    ]
    .into_iter()
    .map(String::from)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect();
    let options = json!({ "binary": chromium.to_string_lossy(), "args": args });
    Map::from_iter([("goog:chromeOptions".to_owned(), options)])
}

/// The port in chromedriver's `ChromeDriver was started successfully on
/// port 40123.`
fn reported_port(line: &str) -> Option<u16> {
    line.split_once("started successfully on port ")?
        .1
        .trim_end()
        .trim_end_matches('.')
        .parse()
        .ok()
}

/// One request without a body to chromedriver; the JSON it answers.
fn request(address: SocketAddr, method: &str, path: &str) -> std::io::Result<Value> {
    let mut stream = TcpStream::connect_timeout(&address, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // chromedriver answers `Connection: close` but keeps the connection
    // open: read the length it announces, not to the end.
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(std::io::Error::other)?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        // Chromium outlives a killed chromedriver. A test that failed before
        // closing its session would leave its browser running, so end every
        // session first: chromedriver then stops the browser it started.
        if let Some(address) = self.address
            && let Ok(sessions) = request(address, "GET", "/sessions")
        {
            let ids = sessions["value"].as_array().into_iter().flatten();
            for id in ids.filter_map(|session| session["id"].as_str()) {
                if let Err(e) = request(address, "DELETE", &format!("/session/{id}")) {
                    eprintln!("testkit: ending WebDriver session {id}: {e}");
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        stop_browser(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for the Chromium processes whose profile is in `dir` to end, and
/// kills those still there at the deadline (chromedriver hung or was killed
/// first).
fn stop_browser(dir: &Path) {
    let needle = format!("--user-data-dir={}", dir.display());
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut interval = Duration::from_millis(20);
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("testkit: killing Chromium processes left running: {left:?}");
            for pid in left {
                // Only processes of this fixture's own directory.
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            return;
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

/// The live processes whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            // A zombie's command line is empty, so it never matches.
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(needle).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_chromedriver_prints_is_read() {
        let line = "ChromeDriver was started successfully on port 40123.";
        assert_eq!(reported_port(line), Some(40123));
        assert_eq!(reported_port("Only local connections are allowed."), None);
    }

    #[test]
    fn sessions_run_the_given_chromium_headless_in_the_fixture_profile() {
        let capabilities = capabilities(Path::new("/usr/bin/chromium"), Path::new("/tmp/p"));
        let options = &capabilities["goog:chromeOptions"];
        assert_eq!(options["binary"], "/usr/bin/chromium");
        let args = options["args"].as_array().expect("args is a list");
        assert!(args.contains(&json!("--headless=new")), "{args:?}");
        assert!(args.contains(&json!("--user-data-dir=/tmp/p")), "{args:?}");
    }
}
