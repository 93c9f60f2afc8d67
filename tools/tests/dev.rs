//! The dev server's dispatch against the route table: every route, at its contract path and
//! at its Vercel file path, reaches its own handler (the request's log line names it), and
//! an unknown path is a 404.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use shared::routes::ROUTES;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// The dev server on a free port, with no configuration (dispatch needs none), and its
/// stdout as lines. Killed when dropped.
struct Dev {
    child: Child,
    port: u16,
    lines: Receiver<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    fn start() -> Dev {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut child = Command::new(env!("CARGO_BIN_EXE_dev"))
            .env_clear()
            .env("PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the dev server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let dev = Dev { child, port, lines };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the dev server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        dev
    }

    /// The route named in the log line of the request with this id.
    fn logged_route(&self, request_id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if entry["request_id"] == request_id {
                        return entry["route"].as_str().expect("a route").to_owned();
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("no log line for request {request_id}")
                }
            }
        }
    }
}

#[tokio::test]
async fn every_route_in_the_table_reaches_its_own_handler() {
    let dev = Dev::start();
    let client = reqwest::Client::new();
    let mut sent = 0;
    for route in &ROUTES {
        for path in [route.path.to_owned(), route.file_path()] {
            sent += 1;
            let request_id = format!("dispatch-{sent}");
            // A method no route takes: every handler answers 405 first, naming its methods.
            let response = client
                .delete(format!("http://127.0.0.1:{}{path}", dev.port))
                .header("x-vercel-id", &request_id)
                .send()
                .await
                .expect("the dev server answers");
            assert_eq!(response.status(), 405, "{path}");
            assert_eq!(
                response.headers()["allow"],
                route.methods.join(", ").as_str(),
                "{path}: the table's methods are the handler's"
            );
            assert_eq!(dev.logged_route(&request_id), route.bin, "{path}");
        }
    }

    let response = client
        .get(format!("http://127.0.0.1:{}/api/webhooks", dev.port))
        .send()
        .await
        .expect("the dev server answers");
    assert_eq!(response.status(), 404);
}
