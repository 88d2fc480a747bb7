//! The timeline page at `/ui/` in a real headless Chromium, against `claim-ledger demo`'s
//! real service: sign in through the demo's printed `#token=` link, search a pod that was
//! bound, replaced and released, follow its claim, replay the state as of a seq before the
//! release, watch new entries arrive, and check that a wrong token shows an error and no
//! data, and that the page never talks to another origin.
//!
//! The browser is driven over the Chrome DevTools protocol (a WebSocket, `tungstenite`).
//! It needs Chromium (Debian's `chromium`; `.ci/run` installs it). Without one the test
//! fails, loudly, unless `CLAIM_LEDGER_SKIP_BROWSER=1` says to skip it. With
//! `CLAIM_LEDGER_UPDATE_SCREENSHOT=1` it writes the README's screenshot,
//! `docs/timeline.png`.

use crate::support::process;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::{address_of, command, Child};
use base64::Engine;
use serde_json::{json, Value};

/// How long any one awaited thing may take: generous, these machines are small and busy.
const PATIENCE: Duration = Duration::from_secs(90);

fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|candidate| candidate.is_file())
}

/// A headless Chromium with a fresh profile, and one page driven over the DevTools
/// protocol. The process is killed when dropped.
struct Browser {
    child: std::process::Child,
    socket: tungstenite::WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Every event received, in order (`Network.requestWillBeSent` among them).
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(binary: &PathBuf) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut command = Command::new(binary);
        command.args([
            "--headless=new",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            "--window-size=1280,1400",
        ]);
        command.arg(format!("--user-data-dir={}", profile.path().display()));
        // Chromium refuses to run as root with its sandbox (CI runs as root).
        if is_root() {
            command.arg("--no-sandbox");
        }
        command
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read every line, for ever: a full pipe would stall the browser.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = sender.send(url.trim().to_string());
                }
            }
        });
        let url = receiver
            .recv_timeout(PATIENCE)
            .expect("Chromium did not print its DevTools address");
        let address = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (socket, _) = tungstenite::client(url.as_str(), stream).expect("DevTools handshake");
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        };
        let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        for method in ["Page.enable", "Network.enable", "Runtime.enable"] {
            browser.send(method, json!({}));
        }
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 1400, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// One DevTools command, on the page's session or the browser's; its result.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params)
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// Like [`Browser::call`], with the protocol's error instead of a panic.
    fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let message = match self.socket.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("DevTools connection failed during {method}: {e}"),
            };
            let tungstenite::Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["id"] == id {
                if let Some(error) = value.get("error") {
                    return Err(error.clone());
                }
                return Ok(value["result"].clone());
            }
            if value.get("method").is_some() {
                self.events.push(value);
            }
        }
    }

    /// A command on the page.
    fn send(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.send(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    fn navigate(&mut self, url: &str) {
        self.send("Page.navigate", json!({"url": url}));
    }

    /// Polls `expression` until it is true. An evaluation the page could not run (it was
    /// navigating: "Inspected target navigated or closed") counts as not yet.
    fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            let session = self.session.clone();
            let evaluated = self.try_call(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            );
            if let Ok(result) = evaluated {
                if result.get("exceptionDetails").is_none()
                    && result["result"]["value"] == json!(true)
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        let page = self.eval("document.body ? document.body.innerText.slice(0, 3000) : ''");
        panic!("timed out waiting for {what} ({expression}); the page says:\n{page}");
    }

    /// Waits until the page has rendered its view (or failed).
    fn wait_rendered(&mut self, what: &str) {
        self.wait_for(
            what,
            "document.readyState === 'complete' && ['ready', 'error', 'signin'].includes(document.getElementById('main')?.dataset.state)",
        );
    }

    /// Every URL the page requested so far.
    fn requested_urls(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|event| event["method"] == "Network.requestWillBeSent")
            .filter_map(|event| event["params"]["request"]["url"].as_str())
            .map(str::to_string)
            .collect()
    }

    fn screenshot(&mut self) -> Vec<u8> {
        let metrics = self.send("Page.getLayoutMetrics", json!({}));
        let height = metrics["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or(1400.0)
            .min(2200.0);
        let shot = self.send(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}}),
        );
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A raw GET: (status line, headers lowercased, body).
fn get_raw(address: &str, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    )
}

fn js_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

#[test]
fn the_timeline_page_tells_a_replaced_pods_story_in_a_real_browser() {
    let Some(chromium) = find_chromium() else {
        if std::env::var_os("CLAIM_LEDGER_SKIP_BROWSER").is_some() {
            eprintln!(
                "\n!!! SKIPPED the browser test of /ui/ (CLAIM_LEDGER_SKIP_BROWSER is set)\n"
            );
            return;
        }
        panic!(
            "no Chromium found (chromium, chromium-browser or google-chrome on PATH, or CHROMIUM=path): \
             install Debian's `chromium` (.ci/run does), or set CLAIM_LEDGER_SKIP_BROWSER=1 to skip this test knowingly"
        );
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo");
    let mut demo = Child::start(&mut command(&[
        "demo",
        "--db",
        db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--step-ms",
        "700",
    ]));
    let api = address_of(&demo.line_with("API  "));
    let origin = format!("http://{api}");
    let bound = demo.line_with("bound warm sandbox");
    let pod_uid = bound
        .split("pod uid ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    let replaced = demo.line_with("replaced: new uid ");
    let new_uid = replaced
        .split("new uid ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    // The page's link, printed by demo whatever order it comes in.
    let link = match demo.seen.iter().find(|line| line.contains("/ui/#token=")) {
        Some(line) => line.clone(),
        None => demo.line_with("/ui/#token="),
    };
    let link = format!("http://{}", address_of(&link));
    assert!(link.starts_with(&format!("{origin}/ui/#token=")), "{link}");
    let token = link.split("#token=").nth(1).unwrap().to_string();

    // The assets are public, with the security headers; data needs the token.
    let (status, headers, body) = get_raw(&api, "/ui/");
    assert!(status.contains(" 200 "), "{status}");
    for header in [
        "content-security-policy: default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
    ] {
        assert!(headers.contains(header), "no {header:?} in:\n{headers}");
    }
    assert!(!body.contains("<script>"), "no inline script");
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no external origin in the page"
    );
    assert!(get_raw(&api, "/ui/app.js").0.contains(" 200 "));
    assert!(get_raw(&api, "/ui").0.contains(" 308 "));
    let timeline_path = format!("/v1/timeline?pod_uid={pod_uid}");
    assert_eq!(
        process::http(&api, "GET", &timeline_path, None, None, PATIENCE).0,
        401
    );
    // Wait until the old uid's release is in the ledger.
    let authorization = format!("Bearer {token}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = process::http(
            &api,
            "GET",
            &timeline_path,
            Some(&authorization),
            None,
            PATIENCE,
        );
        assert_eq!(status, 200, "{body}");
        if body.contains(r#""event":"released""#) && body.contains(r#""event":"deleted""#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the release was never recorded: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body) = process::http(
        &api,
        "GET",
        &format!("/v1/timeline?uid={pod_uid}&pod_uid={pod_uid}"),
        Some(&authorization),
        None,
        PATIENCE,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("exactly one"), "{body}");

    let mut browser = Browser::launch(&chromium);

    // Sign in through the printed link: the token goes to sessionStorage and leaves the
    // address bar.
    browser.navigate(&link);
    browser.wait_rendered("the signed-in page");
    assert_eq!(browser.eval("location.hash"), json!(""));
    assert_eq!(
        browser.eval("sessionStorage.getItem('claim-ledger-token')"),
        json!(token)
    );
    assert_eq!(browser.eval("document.cookie"), json!(""));
    browser.wait_for(
        "the integrity panel",
        "document.querySelector('#integrity [data-verified=\"true\"]') !== null",
    );

    // Search the pod that was bound, replaced and released.
    browser.eval(&format!(
        "document.getElementById('query').value = {}; document.querySelector('#search button').click(); true",
        js_string(&pod_uid)
    ));
    browser.wait_for(
        "the pod's timeline",
        &format!(
            "location.search === {} && document.getElementById('main')?.dataset.state === 'ready'",
            js_string(&format!("?pod_uid={pod_uid}"))
        ),
    );
    let events = browser.eval(
        "[...document.querySelectorAll('li.event')].map(li => ({event: li.dataset.event, reason: li.dataset.reason, seq: Number(li.dataset.seq), text: li.innerText, links: [...li.querySelectorAll('a.obj')].map(a => ({role: a.dataset.role, href: a.getAttribute('href')})), entry: li.querySelector('a.entry')?.getAttribute('href')}))",
    );
    let events = events.as_array().unwrap();
    let find = |name: &str| {
        events
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event among {events:#?}"))
    };
    let created = find("created");
    let bound = find("bound");
    let released = find("released");
    let deleted = find("deleted");
    assert!(created["seq"].as_u64() < bound["seq"].as_u64());
    assert!(bound["seq"].as_u64() < released["seq"].as_u64());
    assert!(released["seq"].as_u64() <= deleted["seq"].as_u64());
    // Released because the pod was replaced: first terminating, then gone.
    assert_eq!(released["reason"], "POD_TERMINATING", "{released:#}");
    assert!(
        released["text"]
            .as_str()
            .unwrap()
            .contains("POD_TERMINATING"),
        "{released:#}"
    );
    assert!(
        bound["text"]
            .as_str()
            .unwrap()
            .contains("sandbox id sbx-0000"),
        "{bound:#}"
    );
    for event in events {
        let seq = event["seq"].as_u64().unwrap();
        assert_eq!(event["entry"], json!(format!("?entry={seq}")), "{event:#}");
    }
    let claim_href = bound["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == "claim")
        .unwrap_or_else(|| panic!("the bound event links no claim: {bound:#}"))["href"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(claim_href.starts_with("?claim_uid="), "{claim_href}");
    assert!(bound["links"].as_array().unwrap().iter().any(
        |l| l["role"] == "sandbox" && l["href"].as_str().unwrap().starts_with("?sandbox_uid=")
    ));
    // The replacement is one click away.
    assert_eq!(
        browser.eval("document.querySelector('a[data-role=\"successor\"]')?.getAttribute('href')"),
        json!(format!("?pod_uid={new_uid}"))
    );
    assert_eq!(
        browser.eval("document.querySelector('#download-bundle') !== null || document.querySelector('#bundle') !== null"),
        json!(true)
    );
    let shot = browser.screenshot();
    assert!(shot.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    if std::env::var_os("CLAIM_LEDGER_UPDATE_SCREENSHOT").is_some() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/timeline.png");
        std::fs::write(&path, &shot).unwrap();
        eprintln!("wrote {}", path.display());
    }

    // The related claim, by its link: both of its pods' bindings.
    browser.eval("document.querySelector('li.event[data-event=\"bound\"] a[data-role=\"claim\"]').click(); true");
    browser.wait_for(
        "the claim's timeline",
        &format!(
            "location.search === {} && document.getElementById('main')?.dataset.state === 'ready'",
            js_string(&claim_href)
        ),
    );
    assert_eq!(
        browser.eval("document.querySelector('section.subject')?.dataset.kind"),
        json!("SandboxClaim")
    );
    let claim_text = browser.eval("document.getElementById('events').innerText");
    let claim_text = claim_text.as_str().unwrap();
    assert!(
        claim_text.contains(&pod_uid) && claim_text.contains(&new_uid),
        "{claim_text}"
    );

    // The entry behind an event.
    let released_seq = released["seq"].as_u64().unwrap();
    browser.navigate(&format!("{origin}/ui/?entry={released_seq}"));
    browser.wait_rendered("the entry");
    assert_eq!(
        browser.eval("document.getElementById('entry')?.dataset.seq"),
        json!(released_seq.to_string())
    );

    // State as of the seq before the release: the old uid's binding is active there, and
    // listed as ended since.
    browser.navigate(&format!("{origin}/ui/?view=state"));
    browser.wait_rendered("the state now");
    browser.eval(&format!(
        "document.getElementById('asof-seq').value = '{}'; document.querySelector('#asof-form button').click(); true",
        released_seq - 1
    ));
    browser.wait_for(
        "the state as of the seq before the release",
        &format!(
            "document.getElementById('state-title')?.dataset.seq === '{}' && document.getElementById('main').dataset.state === 'ready'",
            released_seq - 1
        ),
    );
    assert_eq!(
        browser.eval(&format!(
            "document.querySelector('#bindings tr[data-pod-uid={}]') !== null",
            js_string(&pod_uid)
        )),
        json!(true),
        "the binding is not active as of seq {}",
        released_seq - 1
    );
    assert_eq!(
        browser.eval(&format!(
            "document.querySelector('#bindings-since tr[data-pod-uid={}]')?.innerText.includes('ended since')",
            js_string(&pod_uid)
        )),
        json!(true)
    );

    // Live: new entries appear without a reload (the demo goes on).
    browser.navigate(&format!("{origin}/ui/?view=live"));
    browser.wait_rendered("the live entries");
    let first =
        browser.eval("Number(document.querySelector('#live-entries tr')?.dataset.seq || 0)");
    browser.eval("window.__not_reloaded = true; true");
    browser.wait_for(
        "a new entry to appear",
        &format!("window.__not_reloaded === true && Number(document.querySelector('#live-entries tr')?.dataset.seq || 0) > {first}"),
    );

    // No request left this origin.
    let urls = browser.requested_urls();
    assert!(urls.iter().any(|u| u.contains("/v1/timeline")), "{urls:#?}");
    let foreign: Vec<&String> = urls
        .iter()
        .filter(|u| {
            !(u.starts_with(&format!("{origin}/"))
                || u.starts_with("data:")
                || u.starts_with("blob:")
                || u.starts_with("about:"))
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "requests to another origin: {foreign:#?}"
    );

    // A wrong token: an error, and no data.
    browser.navigate(&format!(
        "{origin}/ui/?pod_uid={pod_uid}#token=not-the-token"
    ));
    browser.wait_rendered("the refused page");
    assert_eq!(
        browser.eval("document.getElementById('main').dataset.state"),
        json!("error")
    );
    let error = browser.eval(
        "document.getElementById('error').hidden ? '' : document.getElementById('error').innerText",
    );
    assert!(error.as_str().unwrap().contains("401"), "{error}");
    assert_eq!(
        browser.eval("document.querySelectorAll('li.event, section.subject, #integrity *').length"),
        json!(0)
    );
    assert_eq!(
        browser.eval("document.getElementById('signin').hidden"),
        json!(false)
    );
    drop(browser);
    drop(demo);
    eprintln!("browser test took {:?}", started.elapsed());
}
