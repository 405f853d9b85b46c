//! `subscribe` (issue 13) against the real binary: a direct-mode daemon running real V2Ray
//! cores for remote V2Ray servers on 127.0.0.1 (tests/common/rig.rs), subscribers on raw
//! sockets, and the `xrat events` / `xrat status --watch` commands.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use common::rig::rig;
use common::{text, wait_until, Root};

/// Longest wait for one event line (a health tick is 1 s; a rotation starts a batch core).
const EVENT_WAIT: Duration = Duration::from_secs(20);
/// A ping answered while a subscriber is stuck must come back within this (generous: the
/// point is that it is not held behind the stuck subscriber, which would be seconds or never).
const PING_BOUND: Duration = Duration::from_secs(2);
/// Reload requests sent per round while flooding a stuck subscriber.
const FLOOD_ROUND: usize = 500;
/// Rounds at most: far more events than the kernel buffer plus the queue can hold.
const FLOOD_ROUNDS_MAX: usize = 60;

/// A subscriber on a raw socket.
struct Sub {
    reader: BufReader<UnixStream>,
    /// The seq of the last line read (the snapshot's at first).
    seq: u64,
    /// Every category subscribed: then seq must grow by exactly 1.
    all: bool,
}

impl Sub {
    /// Subscribes to `events` and checks the snapshot answer.
    fn new(root: &Root, events: Value) -> (Sub, Value) {
        let stream = UnixStream::connect(root.socket()).unwrap();
        stream.set_read_timeout(Some(EVENT_WAIT)).unwrap();
        let all = events.as_array().is_some_and(|a| a.is_empty());
        let mut sub = Sub {
            reader: BufReader::new(stream),
            seq: 0,
            all,
        };
        let line = json!({"protocol_version": 1, "id": 1,
            "request": {"type": "subscribe", "events": events}});
        sub.reader
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        let answer = sub.line().expect("the subscribe answer");
        assert_eq!(answer["code"], 200, "{answer}\n{}", root.log());
        let payload = answer["payload"].clone();
        sub.seq = payload["seq"].as_u64().expect("seq in the snapshot");
        assert!(
            payload["runtime_status"]["runtime_status"].is_string(),
            "{payload}"
        );
        assert!(
            payload["proxy_status"]["rotation_enabled"].is_boolean(),
            "{payload}"
        );
        (sub, payload)
    }

    /// The next line as JSON; None at EOF.
    fn line(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading the stream: {e}"));
        (n > 0).then(|| serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
    }

    /// The next event, checked: a name, a seq above the last one (the next one when
    /// everything is subscribed), and a timestamp of now.
    fn event(&mut self) -> Value {
        let event = self.line().expect("the stream ended");
        let seq = event["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq: {event}"));
        assert!(event["event"].is_string(), "{event}");
        if self.all {
            assert_eq!(seq, self.seq + 1, "{event}");
        } else {
            assert!(seq > self.seq, "seq {seq} after {}: {event}", self.seq);
        }
        self.seq = seq;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let at = event["at"]
            .as_u64()
            .unwrap_or_else(|| panic!("no at: {event}"));
        assert!(
            at <= now_ms + 1000 && at + 60_000 > now_ms,
            "at {at}, now {now_ms}: {event}"
        );
        event
    }

    /// Reads events until one named `name` for which `want` holds; the events read on the way
    /// (that one last).
    fn until(&mut self, name: &str, want: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + EVENT_WAIT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let event = self.event();
            let done = event["event"] == name && want(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
        panic!("no {name} within {EVENT_WAIT:?}; saw {seen:#?}");
    }
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

#[test]
fn events_follow_a_session_its_health_and_a_rotation() {
    let rig = rig(2, "");
    let (a, b) = (rig.ids[0], rig.ids[1]);
    let (mut all, snapshot) = Sub::new(&rig.root, json!([]));
    assert_eq!(
        snapshot["categories"],
        json!(["session", "health", "rotation", "config", "pool", "relay"])
    );
    assert_eq!(snapshot["queue_max"], 1024);
    assert_eq!(snapshot["runtime_status"]["runtime_status"], "idle");
    let (mut rotations, _) = Sub::new(&rig.root, json!(["rotation"]));

    let session = rig.connect(a)["session_id"].as_i64().unwrap();
    let started = all.until("session_started", |e| e["session_id"] == session);
    let started = started.last().unwrap();
    assert_eq!(started["config_id"], a, "{started}");
    assert_eq!(started["core"], "v2ray", "{started}");
    assert_eq!(
        started["socks_addr"],
        format!("127.0.0.1:{}", rig.socks_port)
    );
    assert!(started["pid"].as_u64().is_some_and(|p| p > 0), "{started}");
    assert!(started["http_addr"].is_null(), "{started}");
    let health = all.until("health_checked", |e| e["ok"] == true);
    let health = health.last().unwrap();
    assert_eq!(health["session_id"], session, "{health}");
    assert!(health["latency_ms"].is_u64(), "{health}");
    assert!(health["error"].is_null(), "{health}");
    assert_eq!(health["consecutive_failures"], 0, "{health}");

    let reply =
        rig.call(json!({"type": "runtime_replace", "trigger": "manual", "candidate_id": b}));
    assert_eq!(reply["code"], 200, "{reply}\n{}", rig.root.log());
    let seen = all.until("rotation_finished", |_| true);
    let begun = seen.iter().find(|e| e["event"] == "rotation_started");
    let begun = begun.unwrap_or_else(|| panic!("no rotation_started before: {seen:#?}"));
    assert_eq!(
        (&begun["trigger"], &begun["from"]),
        (&json!("manual"), &json!(a))
    );
    let finished = seen.last().unwrap();
    assert_eq!(finished["result"], "switched", "{finished}");
    assert_eq!((&finished["from"], &finished["to"]), (&json!(a), &json!(b)));
    assert!(
        finished["tested"].as_u64().is_some_and(|n| n >= 1),
        "{finished}"
    );
    assert!(finished["elapsed_ms"].is_u64(), "{finished}");
    let ended = seen.iter().find(|e| e["event"] == "session_ended");
    let ended = ended.unwrap_or_else(|| panic!("the old session did not end: {seen:#?}"));
    assert_eq!(
        (&ended["session_id"], &ended["config_id"]),
        (&json!(session), &json!(a))
    );
    assert!(ended["reason"].is_string(), "{ended}");
    let new = seen.iter().find(|e| e["event"] == "session_started");
    let new = new.unwrap_or_else(|| panic!("no new session: {seen:#?}"));
    assert_eq!(new["config_id"], b, "{new}");

    // The rotation-only subscriber saw exactly the two rotation events.
    let (first, second) = (rotations.event(), rotations.event());
    assert_eq!(
        names(&[first.clone(), second.clone()]),
        ["rotation_started", "rotation_finished"]
    );
    assert_eq!(
        (first["seq"].clone(), second["seq"].clone()),
        (begun["seq"].clone(), finished["seq"].clone())
    );
}

/// Lines of a child's stdout, read on a thread.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line for which `want` holds, within [`EVENT_WAIT`].
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + EVENT_WAIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no matching line within {EVENT_WAIT:?}; saw {seen:#?}");
}

/// Reloads until `rx` shows a `config_changed`: the command behind it has subscribed.
fn subscribed(root: &Root, rx: &std::sync::mpsc::Receiver<String>) {
    let deadline = Instant::now() + EVENT_WAIT;
    while Instant::now() < deadline {
        let reply = root
            .connect()
            .call(json!(1), json!({"type": "daemon_reload"}));
        assert_eq!(reply["code"], 200, "{reply}");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            assert!(
                line.contains("config_changed") && line.contains("reloaded"),
                "{line}"
            );
            while rx.recv_timeout(Duration::from_millis(50)).is_ok() {}
            return;
        }
    }
    panic!("xrat events printed no reload within {EVENT_WAIT:?}");
}

#[test]
fn the_cli_streams_events_and_redraws_the_status() {
    let rig = rig(1, "");
    let a = rig.ids[0];
    let spawn = |args: &[&str]| {
        rig.root
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut text_events = spawn(&["events", "--category", "session", "--category", "config"]);
    let mut json_events = spawn(&[
        "events",
        "--json",
        "--category",
        "health",
        "--category",
        "config",
    ]);
    let mut watch = spawn(&["status", "--watch", "--json"]);
    let (text_rx, json_rx, watch_rx) = (
        lines_of(&mut text_events),
        lines_of(&mut json_events),
        lines_of(&mut watch),
    );
    let first = wait_line(&watch_rx, |_| true);
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["runtime_status"], "idle", "{first}");
    // The watcher subscribed once it drew; the others have once they print a reload.
    for rx in [&text_rx, &json_rx] {
        subscribed(&rig.root, rx);
    }
    rig.connect(a);
    let line = wait_line(&text_rx, |l| l.contains("session_started"));
    // HH:MM:SS.mmm, the seq, the name, then what happened.
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0].len(), 12, "{line}");
    assert!(fields[1].parse::<u64>().is_ok(), "{line}");
    assert_eq!(fields[2], "session_started", "{line}");
    assert!(line.contains(&format!("config #{a} v2ray")), "{line}");
    let raw = wait_line(&json_rx, |l| l.contains("health_checked"));
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["config_id"], a, "{raw}");
    let redrawn = wait_line(&watch_rx, |l| l.contains("\"running\""));
    let redrawn: Value = serde_json::from_str(&redrawn).unwrap();
    assert_eq!(redrawn["active_config_id"], a, "{redrawn}");
    for child in [&mut text_events, &mut json_events, &mut watch] {
        assert!(
            child.try_wait().unwrap().is_none(),
            "a streaming command exited early"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Stopping the daemon ends a stream: exit 3, the daemon is gone.
    let mut follower = spawn(&["events"]);
    std::thread::sleep(Duration::from_millis(300));
    let out = rig.root.run(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let done = wait_until(Duration::from_secs(10), || {
        follower.try_wait().unwrap().is_some()
    });
    assert!(done, "xrat events still runs after the daemon stopped");
    assert_eq!(follower.wait().unwrap().code(), Some(3));
    // Nothing to reach: exit 3 at once.
    let out = rig.root.run(&["events"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = rig.root.run(&["status", "--watch"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // A category that does not exist is a usage error naming the valid ones.
    let out = rig.root.run(&["events", "--category", "sessions"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("session, health, rotation, config, pool, relay"));
}

#[test]
fn an_unknown_category_is_refused_with_the_valid_ones() {
    let root = Root::new();
    root.write_settings("[runtime]\nmode = \"direct\"\n");
    root.start();
    let mut conn = root.connect();
    let reply = conn.call(
        json!(5),
        json!({"type": "subscribe", "events": ["session", "sessions"]}),
    );
    assert_eq!(reply["code"], 400, "{reply}");
    assert_eq!(reply["id"], 5, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("\"sessions\""), "{message}");
    assert!(
        message.contains("session, health, rotation, config, pool, relay"),
        "{message}"
    );
    // The connection is not a subscriber: it goes on answering requests.
    let ping = conn.call(json!(6), json!({"type": "daemon_ping"}));
    assert_eq!(ping["code"], 200, "{ping}");
}

/// Sends `count` reloads on `conn` and reads their answers.
fn reloads(conn: &mut common::Conn, count: usize) {
    let line = json!({"protocol_version": 1, "request": {"type": "daemon_reload"}});
    let batch = format!("{line}\n").repeat(count);
    conn.send(batch.as_bytes());
    for _ in 0..count {
        let reply = conn.recv();
        assert_eq!(reply["code"], 200, "{reply}");
    }
}

#[test]
fn a_subscriber_that_never_reads_gets_lagged_and_is_closed_while_others_are_served() {
    let root = Root::new();
    root.write_settings("[daemon]\nsubscriber_queue_max = 16\n[runtime]\nmode = \"direct\"\n");
    root.start();
    // A line sent after subscribe is never answered: everything after the answer is events.
    let stuck = UnixStream::connect(root.socket()).unwrap();
    stuck.set_read_timeout(Some(EVENT_WAIT)).unwrap();
    let mut stuck = Sub {
        reader: BufReader::new(stuck),
        seq: 0,
        all: false,
    };
    let subscribe = json!({"protocol_version": 1, "id": "s",
        "request": {"type": "subscribe", "events": ["config"]}});
    let ping = json!({"protocol_version": 1, "id": "p", "request": {"type": "daemon_ping"}});
    stuck
        .reader
        .get_mut()
        .write_all(format!("{subscribe}\n{ping}\n").as_bytes())
        .unwrap();
    let answer = stuck.line().unwrap();
    assert_eq!(
        (answer["code"].clone(), answer["id"].clone()),
        (json!(200), json!("s")),
        "{answer}"
    );
    assert_eq!(answer["payload"]["queue_max"], 16, "{answer}");
    assert_eq!(answer["payload"]["categories"], json!(["config"]));
    stuck.seq = answer["payload"]["seq"].as_u64().unwrap();
    // A reading subscriber alongside: it keeps up and is not closed.
    let (mut reader, _) = Sub::new(&root, json!(["config"]));

    let mut flood = root.connect();
    let mut other = root.connect();
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    while !root.log().contains("fell") {
        assert!(
            rounds < FLOOD_ROUNDS_MAX,
            "no subscriber lagged after {rounds} rounds:\n{}",
            root.log()
        );
        rounds += 1;
        reloads(&mut flood, FLOOD_ROUND);
        for _ in 0..FLOOD_ROUND {
            let event = reader.event();
            assert_eq!(
                (&event["event"], &event["change"]),
                (&json!("config_changed"), &json!("reloaded"))
            );
        }
        let asked = Instant::now();
        let pong = other.call(json!(rounds), json!({"type": "daemon_ping"}));
        assert_eq!(pong["code"], 200, "{pong}");
        worst = worst.max(asked.elapsed());
    }
    eprintln!("lagged after {rounds} round(s) of {FLOOD_ROUND} events; slowest ping {worst:?}");
    assert!(
        worst < PING_BOUND,
        "a ping took {worst:?} while a subscriber was stuck"
    );

    // Now read the stuck one: events in order, then `lagged` as the last line, then EOF.
    let mut received = 0u64;
    let lagged = loop {
        let event = stuck.event();
        match event["event"].as_str() {
            Some("config_changed") => received += 1,
            Some("lagged") => break event,
            _ => panic!("unexpected line on the stuck subscriber: {event}"),
        }
    };
    assert!(
        received > 16,
        "only {received} events before lagged: {lagged}"
    );
    assert!(
        lagged["dropped"].as_u64().is_some_and(|d| d >= 1),
        "{lagged}"
    );
    assert!(
        stuck.line().is_none(),
        "the daemon kept the lagged subscriber open"
    );
    // The reader that kept up is still subscribed and hears the next event.
    reloads(&mut flood, 1);
    let event = reader.event();
    assert_eq!(event["change"], "reloaded", "{event}");
    let pong = other.call(json!("last"), json!({"type": "daemon_ping"}));
    assert_eq!(pong["code"], 200, "{pong}");
}

#[test]
fn front_mode_publishes_the_pool_and_the_relay_counters_once_a_second_at_most() {
    use common::cores::{socks5_get, Core};
    use common::front::{front, Opts};
    let f = front(Opts::new(Core::V2ray, 2));
    let (a, b) = (f.ids[0], f.ids[1]);
    let (mut sub, _) = Sub::new(&f.root, json!(["pool", "relay", "rotation"]));
    f.connect(a);
    // Both members come alive (a probe each): the pool as runtime_status shows it.
    let seen = sub.until("pool_changed", |e| {
        let members = e["members"].as_array().unwrap();
        members.len() == 2 && members.iter().all(|m| m["alive"] == true)
    });
    let members = seen.last().unwrap()["members"].clone();
    assert_eq!(members[0]["config_id"], a, "{members}");
    assert_eq!(members[0]["active"], true, "{members}");
    assert!(members[1]["socks_addr"].is_string(), "{members}");
    // Traffic through the front: the counters follow, at most once a second.
    let page = socks5_get(f.socks_port, f.http.port(), "/page").expect("a fetch through the front");
    assert_eq!(page, f.http.body());
    let seen = sub.until("relay_counters", |e| {
        e["connections_total"].as_u64() >= Some(1) && e["bytes_down"].as_u64() > Some(0)
    });
    let relay = seen.last().unwrap();
    assert_eq!(relay["refused_at_limit"], 0, "{relay}");
    for _ in 0..3 {
        socks5_get(f.socks_port, f.http.port(), "/page").expect("a fetch through the front");
    }
    let next = sub.until("relay_counters", |_| true);
    let next = next.last().unwrap();
    let gap = next["at"].as_u64().unwrap() - relay["at"].as_u64().unwrap();
    // The timer may fire a few ms early on the wall clock; the cadence is 1 s.
    assert!(
        gap >= 900,
        "relay_counters {gap} ms apart: {relay} then {next}"
    );
    assert!(next["connections_total"].as_u64() > relay["connections_total"].as_u64());
    // A switch to the warm member is a rotation without a batch test.
    let reply = f.call(json!({"type": "runtime_replace", "trigger": "manual", "candidate_id": b}));
    assert_eq!(reply["code"], 200, "{reply}");
    let seen = sub.until("rotation_finished", |_| true);
    let finished = seen.last().unwrap();
    assert_eq!(
        (&finished["from"], &finished["to"]),
        (&json!(a), &json!(b)),
        "{finished}"
    );
    assert_eq!(
        (&finished["result"], &finished["tested"]),
        (&json!("switched"), &json!(0))
    );
    let seen = sub.until("pool_changed", |e| e["members"][0]["config_id"] == b);
    assert_eq!(seen.last().unwrap()["members"][0]["active"], true);
}
