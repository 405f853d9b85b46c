//! `xrat api serve` from tests: start it on a kernel-picked port, read its start line and
//! token, send raw HTTP/1.1 requests and parse the answers; a live daemon with two V2Ray remotes.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use serde_json::Value;

use super::cores::{free_port, Core, HttpTarget, Proto, RemoteServer};
use super::{text, Root};

/// How long the API may take to print its start line, or a refused start to exit.
pub const START_LIMIT: Duration = Duration::from_secs(10);
/// Read timeout of the test's HTTP client: a rotation batch-tests candidates first.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `xrat api serve`, killed on drop.
pub struct Api {
    pub child: Child,
    pub lines: Receiver<String>,
    pub port: u16,
    pub token: String,
}

impl Api {
    /// Serves on a port the kernel picks (port 0: no race for a "free" port); the start line
    /// tells which.
    pub fn start(root: &Root) -> Api {
        Api::start_on(root, "127.0.0.1:0")
    }

    pub fn start_on(root: &Root, listen: &str) -> Api {
        Api::start_with(root, &["--listen", listen])
    }

    /// `xrat api serve ARGS`, which must include a `--listen`.
    pub fn start_with(root: &Root, args: &[&str]) -> Api {
        let log = std::fs::File::create(root.path().join("api.log")).unwrap();
        let mut command = vec!["api", "serve"];
        command.extend_from_slice(args);
        let mut child = root
            .command(&command)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut api = Api {
            child,
            lines,
            port: 0,
            token: String::new(),
        };
        let line = api.lines.recv_timeout(START_LIMIT).unwrap_or_else(|_| {
            let log = std::fs::read_to_string(root.path().join("api.log")).unwrap_or_default();
            panic!("no start line from `xrat api serve`; stderr:\n{log}")
        });
        let token_path = root.path().join("api.token");
        let rest = line.strip_prefix("API listening on http://").expect(&line);
        let (addr, tail) = rest.split_once(' ').expect(&line);
        assert_eq!(tail, format!("(token in {})", token_path.display()));
        api.port = addr.parse::<SocketAddr>().expect(&line).port();
        api.token = std::fs::read_to_string(token_path).unwrap();
        api.token.truncate(api.token.trim_end().len());
        api
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[("Authorization", &self.auth())], "")
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.send("POST", path, &[("Authorization", &self.auth())], body)
    }

    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let stream = self.open();
        (&stream)
            .write_all(&raw_request(method, path, headers, body))
            .unwrap();
        read_reply(&mut BufReader::new(stream))
    }

    pub fn open(&self) -> TcpStream {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
        stream
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request; HTTP/1.1 keeps the connection open, and the client drops it when done.
pub fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    head.into_bytes()
}

/// One parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    }

    /// Asserts the status, that the body is an envelope with the same `ok`, and returns the body.
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["ok"], status == 200, "{self:?}");
        assert_eq!(self.body["protocol_version"], 1, "{self:?}");
        &self.body
    }

    pub fn payload(&self) -> &Value {
        &self.expect(200)["payload"]
    }
}

/// Reads one response: status line, headers, a Content-Length JSON body (none for 204).
pub fn read_reply(reader: &mut impl BufRead) -> Reply {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let body = Value::Null;
    let mut reply = Reply {
        status,
        headers,
        body,
    };
    if reply.status == 204 {
        // No Content: no body and no Content-Length.
        return reply;
    }
    let mut body = vec![0; reply.header("content-length").unwrap().parse().unwrap()];
    reader.read_exact(&mut body).unwrap();
    reply.body = serde_json::from_slice(&body).unwrap();
    reply
}

/// Two V2Ray SOCKS remotes imported, a daemon with the V2Ray core, the API in front.
pub struct Live {
    pub root: Root,
    pub http: HttpTarget,
    pub _remotes: Vec<RemoteServer>,
    pub ids: Vec<i64>,
    pub socks_port: u16,
    pub daemon_pid: u32,
}

pub fn live() -> Live {
    let root = Root::new();
    let http = HttpTarget::start();
    let socks_port = free_port();
    root.write_settings(&format!(
        "[runtime]\n{}socks_port = {socks_port}\n[health]\nprobe_url = \"{}\"\ntimeout_ms = 2000\n",
        Core::V2ray.runtime_settings(),
        http.url("/probe"),
    ));
    let remotes: Vec<RemoteServer> = (0..2)
        .map(|_| RemoteServer::start_on(Proto::Socks, Core::V2ray))
        .collect();
    let ids = remotes
        .iter()
        .map(|remote| {
            let out = root.run(&["config", "import", &remote.link(), "--json"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let view: Value = serde_json::from_slice(&out.stdout).unwrap();
            view["imported"][0]["id"].as_i64().unwrap()
        })
        .collect();
    let daemon_pid = root.start();
    Live {
        daemon_pid,
        root,
        http,
        _remotes: remotes,
        ids,
        socks_port,
    }
}
