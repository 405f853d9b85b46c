//! The simulation's checks: every effect is judged against the model as it is drained, and the
//! safety and liveness rules are checked after every step.

use crate::ipc::protocol::{Code, Trigger};

use super::ops::Job;
use super::sim_exec::{Life, Target, INSPECT_MS, KILL_MS, SPAWN_MS};
use super::sim_front::BEGIN_MS;
use super::sim_world::{Expect, Kind, OpModel, Rot, World};
use super::{CoreSpec, Effect, ReplaceResult, Reply, RotationEvent, STOP_GRACE_MS};

impl World {
    /// After an input: operation boundaries, then the effects, then the step invariants.
    pub(super) fn after(&mut self) {
        if self.cfg.front {
            self.front_after_handle();
        }
        let op_after = self.sup.op.as_ref().map(|op| op.op);
        if op_after != self.op_before {
            self.ended = self.op.take();
            if let Some(ended) = self.ended.take() {
                self.check_ended(&ended);
                self.respawn_ended(&ended);
                self.ended = Some(ended);
            }
            if op_after.is_some() {
                self.start_op();
            }
        }
        while let Some(effect) = self.sup.poll_effect() {
            self.observe(effect);
        }
        if let Some(ended) = self.ended.take() {
            let open = ended.client.is_some_and(|c| self.conns.contains_key(&c));
            self.check(!open || ended.replied, || {
                format!(
                    "operation {} ended without answering its request",
                    ended.id.0
                )
            });
        }
        self.check_step();
    }

    fn check_ended(&self, op: &OpModel) {
        let age = self.now.monotonic_ms - op.started_ms;
        self.check(age <= op.bound_ms, || {
            format!(
                "{:?} took {age} ms, over its bound of {} ms",
                op.kind, op.bound_ms
            )
        });
        for core in &op.stopped {
            let gone = self.exec.cores.get(core).is_none_or(|c| !c.alive());
            self.check(gone, || {
                format!(
                    "{:?} answered before core {} it stopped exited",
                    op.kind, core.0
                )
            });
        }
    }

    pub(super) fn bound(&self, kind: Kind) -> u64 {
        let c = &self.cfg;
        let stop = STOP_GRACE_MS + KILL_MS;
        let start = SPAWN_MS + c.ready_timeout_ms;
        let probe = c.probe_timeout_ms + 1;
        let begin = if c.front { BEGIN_MS } else { 0 };
        match kind {
            // A front connect stops nothing it waits for but a failed new pool core.
            Kind::Connect(_) if c.front => INSPECT_MS + start + begin + KILL_MS + 10,
            Kind::Connect(_) => INSPECT_MS + stop + start + KILL_MS + 10,
            // One executor round trip: no process starts.
            Kind::PoolSwitch => BEGIN_MS + 2,
            // One pool core start and its row; a failed one is killed.
            Kind::Respawn => start + begin + KILL_MS + 10,
            Kind::Disconnect => stop + 10,
            // Every config probed one after the other at worst (concurrency 1), nothing cut short.
            Kind::Test => {
                let n = self.exec.configs.len() as u64 + 3;
                INSPECT_MS + start + n * probe + KILL_MS + 10
            }
            Kind::Replace => {
                let n = self.exec.configs.len() as u64;
                let rounds = n.div_ceil(u64::from(c.test_concurrency.max(1)));
                INSPECT_MS
                    + start
                    + rounds * probe
                    + KILL_MS
                    + stop
                    + n * (start + probe + stop + begin)
                    + start
                    + begin
                    + 100
            }
        }
    }

    /// An operation began in this step.
    fn start_op(&mut self) {
        let o = self.sup.op.as_ref().expect("an operation");
        let (id, client) = (o.op, o.conn.map(|c| c.0));
        let mut switch = None;
        let (kind, rot) = match &o.job {
            Job::Connect(_) => match &self.last_request {
                Some((_, crate::ipc::protocol::Request::RuntimeConnect { config_id })) => {
                    (Kind::Connect(*config_id), None)
                }
                _ => self.fail("a connect nobody asked for"),
            },
            Job::Disconnect(_) => (Kind::Disconnect, None),
            Job::Respawn(_) => (Kind::Respawn, None),
            Job::Test(_) => (Kind::Test, None),
            Job::PoolSwitch(s) => {
                switch = Some(super::sim_front_check::SwitchModel {
                    trigger: s.trigger,
                    to: s.to,
                    core: s.core,
                    connect: s.connect,
                    old_config: s.old_config,
                    persisted: None,
                });
                (Kind::PoolSwitch, None)
            }
            Job::Replace(r) => {
                let rot = Rot {
                    trigger: r.trigger,
                    candidate_id: r.candidate_id,
                    old_session: r.old_session,
                    old_core: r.old_core,
                    old_config: r.old_config,
                    batch: None,
                    batch_probes: Default::default(),
                    passed: Default::default(),
                    tried: Vec::new(),
                    verify: Default::default(),
                    verified: Default::default(),
                    persisted: None,
                };
                (Kind::Replace, Some(rot))
            }
        };
        if let Some(s) = &switch {
            self.front_switch_started(s, client.is_some());
        }
        match client {
            Some(conn) => self.client_op_started(conn),
            None if kind == Kind::Disconnect => self.check(self.shutting_down, || {
                "a daemon disconnect outside shutdown".into()
            }),
            None if kind == Kind::PoolSwitch => {}
            None if kind == Kind::Respawn => self.respawn_started(),
            None => self.auto_rotation_started(rot.as_ref().expect("a rotation")),
        }
        if kind == Kind::Replace {
            self.dead = None;
        }
        self.op = Some(OpModel {
            id,
            kind,
            started_ms: self.now.monotonic_ms,
            bound_ms: self.bound(kind),
            client,
            replied: false,
            stopped: Default::default(),
            rot,
            switch,
            test_batch: None,
        });
    }

    fn client_op_started(&mut self, conn: u64) {
        let asked = self
            .last_request
            .as_ref()
            .is_some_and(|(c, r)| *c == conn && r.is_runtime_operation());
        self.check(asked, || {
            format!("an operation for connection {conn} that sent none")
        });
        let model = self.conns.get_mut(&conn);
        match model.and_then(|m| m.awaiting.back_mut()) {
            Some(last) if last.expect == Expect::Runtime => last.op = true,
            _ => self.fail("an operation for a request that must not start one"),
        }
    }

    /// A timer or health rotation began: the trigger's rules and the cooldown.
    fn auto_rotation_started(&mut self, rot: &Rot) {
        let now = self.now.monotonic_ms;
        let cooldown = now < self.cooldown_until;
        self.check(self.enabled && !self.shutting_down, || {
            format!(
                "a {:?} rotation while rotation is off or shutting down",
                rot.trigger
            )
        });
        match rot.trigger {
            Trigger::Timer => {
                let due = self.timer_due.is_some_and(|due| due <= now);
                self.check(due && !cooldown, || {
                    format!(
                        "timer rotation not due (due {:?}) or in cooldown ({cooldown})",
                        self.timer_due
                    )
                });
                self.timer_due = Some(now + self.cfg.rotation_interval_secs * 1000);
                self.stats.auto[0] += 1;
            }
            Trigger::HealthCheckFailed => {
                let core_dead = self
                    .exec
                    .cores
                    .get(&rot.old_core)
                    .is_some_and(|c| !c.alive());
                let failing = self.health_failures >= self.cfg.failure_threshold;
                self.check(self.cfg.health_trigger_enabled, || {
                    "health rotation with the health trigger off".into()
                });
                self.stats.auto[if core_dead { 2 } else { 1 }] += 1;
                let ok = if self.cfg.front {
                    self.front_health_rotation_ok(core_dead, cooldown)
                } else {
                    core_dead || (failing && !cooldown)
                };
                self.check(ok, || {
                    format!(
                        "health rotation with {} failures (threshold {}), core alive, cooldown {cooldown}",
                        self.health_failures, self.cfg.failure_threshold
                    )
                });
            }
            Trigger::Manual => self.fail("a manual rotation nobody asked for"),
        }
    }

    fn observe(&mut self, effect: Effect) {
        let now = self.now.monotonic_ms;
        match effect {
            Effect::Reply {
                conn,
                id,
                reply,
                close_after,
            } => self.on_reply(conn.0, id, reply, close_after),
            Effect::Inspect { inspect, selection } => {
                self.check(self.op.is_some(), || "Inspect outside an operation".into());
                self.exec.on_inspect(now, inspect, selection, &mut self.rng);
            }
            Effect::StartCore {
                core,
                spec,
                ready_timeout_ms,
            } => {
                self.check(ready_timeout_ms == self.cfg.ready_timeout_ms, || {
                    "ready timeout".into()
                });
                self.on_start(core, &spec);
                self.exec
                    .on_start(now, core, spec, ready_timeout_ms, &mut self.rng);
            }
            Effect::StopCore { core, grace_ms } => self.on_stop(core, grace_ms),
            Effect::Route { targets } => self.front_route(targets),
            Effect::Reroute { core, config_id } => self.front_reroute(core, config_id),
            Effect::HoldFront { until_ms } => self.on_hold(until_ms),
            Effect::BeginSession { core, config_id } => self.front_begin(core, config_id),
            Effect::Probe {
                probe,
                addr,
                timeout_ms,
                ..
            } => {
                let target = self
                    .exec
                    .on_probe(now, probe, addr, timeout_ms, &mut self.rng);
                // Health probes are capped below the health interval (start-to-start spacing).
                let interval = self.cfg.health_interval_ms;
                let capped = self
                    .cfg
                    .probe_timeout_ms
                    .min((interval - interval / 10).max(1));
                // Member re-probes are shorter (retry_interval_ms, or three latencies).
                let member = matches!(target, Target::Pool(..)) && timeout_ms <= capped;
                self.check(
                    timeout_ms == self.cfg.probe_timeout_ms || timeout_ms == capped || member,
                    || format!("probe timeout {timeout_ms} ms"),
                );
                self.on_probe(probe, target);
            }
            Effect::EndSession { session_id, reason } => {
                // A row ended at its core's exit may be ended again by the disconnect or
                // connect that drops it (the store keeps the first end).
                let first = self
                    .ended_sessions
                    .insert(session_id, reason.starts_with("core_exited"));
                self.check(first.is_none_or(|exited| exited), || {
                    format!("session {session_id} ended twice (now: {reason})")
                });
            }
            Effect::Persist(event) => self.on_persist(&event),
            Effect::RefreshSubscriptions {
                refresh,
                timeout_ms,
            } => self.on_refresh(refresh, timeout_ms),
            Effect::RecordTests { results, .. } => self.on_record_tests(&results),
            Effect::Publish(event) => self.observe_event(event),
            Effect::SampleRelay => self.ev.relay_asked = true,
            Effect::Log(_) => {}
            Effect::Shutdown => self.on_shutdown(),
        }
    }

    fn on_reply(&mut self, conn: u64, id: crate::ipc::RawId, reply: Reply, close_after: bool) {
        let Some(model) = self.conns.get_mut(&conn) else {
            self.fail(&format!("a reply on closed connection {conn}: {reply:?}"));
        };
        let Some(front) = model.awaiting.pop_front() else {
            self.fail(&format!(
                "a reply nobody asked for on connection {conn}: {reply:?}"
            ));
        };
        if close_after {
            self.conns.remove(&conn);
        }
        self.check(super::sim_world::raw_id(front.n) == id, || {
            format!("reply out of order on connection {conn}: {reply:?}")
        });
        if front.op {
            let ended = self.ended.as_mut().filter(|op| op.client == Some(conn));
            match ended {
                Some(op) => op.replied = true,
                None => self.fail("an operation's answer while it is still in flight"),
            }
        }
        let code = match &reply {
            Reply::Error { code, .. } => Some(*code),
            _ => None,
        };
        self.stats.busy += u64::from(code == Some(Code::Busy));
        self.check(
            code != Some(Code::Busy) || front.expect == Expect::Error(Code::Busy),
            || format!("423 to a request sent while idle: {reply:?}"),
        );
        let refused_subscribe = front.expect == Expect::Subscribe && code == Some(Code::Conflict);
        self.check(
            close_after == (code == Some(Code::FrameTooLarge) || refused_subscribe),
            || "close_after".into(),
        );
        let ok = match (&front.expect, &reply) {
            (Expect::Error(want), _) => code == Some(*want),
            (Expect::Ping, Reply::Ping { pid, .. }) => *pid == self.cfg.pid,
            (Expect::Status, Reply::RuntimeStatus(_)) | (Expect::Shutdown, Reply::Shutdown(_)) => {
                true
            }
            (Expect::Rotation(on), Reply::Rotation(p)) => p.rotation_enabled == *on,
            (Expect::Subscribe, Reply::Subscribed(p)) => {
                p.seq == self.ev.last_seq && p.queue_max == self.cfg.subscriber_queue_max
            }
            // Held behind the connection's operation, so it leaves when that ends.
            (Expect::Subscribe, Reply::Error { code, .. }) => *code == Code::Conflict,
            (
                Expect::ProxyStatus {
                    enabled,
                    cooldown_active,
                    next_rotation_at,
                },
                Reply::ProxyStatus(p),
            ) => {
                p.rotation_enabled == *enabled
                    && p.cooldown_active == *cooldown_active
                    && p.next_rotation_at == *next_rotation_at
            }
            (Expect::Runtime, Reply::Error { code, .. }) => *code != Code::Busy,
            (Expect::Runtime, Reply::Replaced(p)) => self.ended.as_ref().is_some_and(|op| {
                let switched = op.switch.as_ref().and_then(|s| s.persisted);
                op.rot
                    .as_ref()
                    .and_then(|r| r.persisted)
                    .or(switched)
                    .map(|r| r.name())
                    == Some(p.result.as_str())
            }),
            (Expect::Runtime, Reply::Connected(_) | Reply::Disconnected(_)) => true,
            (Expect::Runtime, Reply::ConfigTested(p)) => self.test_reply_ok(p),
            _ => false,
        };
        self.check(ok, || format!("expected {:?}, got {reply:?}", front.expect));
    }

    pub(super) fn rot(&mut self) -> &mut Rot {
        let rot = self.op.as_mut().and_then(|op| op.rot.as_mut());
        match rot {
            Some(rot) => rot,
            None => panic!("not in a rotation; replay with XRAT_SIM_SEED={}", self.seed),
        }
    }

    fn on_start(&mut self, core: super::CoreId, spec: &CoreSpec) {
        let kind = self.op.as_ref().map(|op| op.kind);
        match (kind, spec) {
            (Some(Kind::Connect(want)), CoreSpec::Session { config_id }) => {
                self.check(want == *config_id, || {
                    format!("connect {want} started config {config_id}")
                });
            }
            (Some(Kind::Connect(want)), CoreSpec::Pool { config_ids }) if self.cfg.front => {
                self.check_members(config_ids);
                self.check_not_quarantined("warm pool member", &config_ids[1..]);
                self.check(config_ids.first() == Some(&want), || {
                    format!("connect {want} started pool {config_ids:?}")
                });
            }
            (Some(Kind::Replace), CoreSpec::Pool { config_ids }) if self.cfg.front => {
                self.check_members(config_ids);
                self.check_not_quarantined("warm pool member", &config_ids[1..]);
                let spec = CoreSpec::Session {
                    config_id: config_ids[0],
                };
                self.on_start(core, &spec);
            }
            (Some(Kind::Respawn), CoreSpec::Pool { config_ids }) if self.cfg.front => {
                self.respawn_start_core(core, config_ids);
            }
            (Some(Kind::Replace), CoreSpec::Session { config_id }) => {
                let rot = self.rot();
                let restore = *config_id == rot.old_config;
                let again = rot.tried.iter().any(|(_, c)| c == config_id);
                let passed = rot.passed.contains(config_id);
                rot.tried.push((core, *config_id));
                self.check(restore || (passed && !again), || {
                    format!("switch to config {config_id}, which did not pass this batch (or was tried)")
                });
            }
            (Some(Kind::Replace), CoreSpec::Batch { config_ids }) => {
                let rot = self.rot();
                let first = rot.batch.replace(core).is_none();
                let old = rot.old_config;
                let own = rot.candidate_id == Some(old);
                let (trigger, named) = (rot.trigger, rot.candidate_id.is_some());
                self.check(first, || "two batch cores in one rotation".into());
                self.check_batch_policy(trigger, named, config_ids);
                self.check(own || !config_ids.contains(&old), || {
                    "the active config in the batch".into()
                });
            }
            (Some(Kind::Test), CoreSpec::Batch { .. }) => {
                let op = self.op.as_mut().expect("a test in flight");
                let first = op.test_batch.replace(core).is_none();
                self.check(first, || "two batch cores in one config test".into());
            }
            _ => self.fail(&format!("StartCore {spec:?} in {kind:?}")),
        }
    }

    fn on_stop(&mut self, core: super::CoreId, grace_ms: u64) {
        let now = self.now.monotonic_ms;
        if let Err(why) = self.exec.on_stop(now, core, grace_ms, &mut self.rng) {
            self.fail(&why);
        }
        if self.cfg.front && self.front_stop(core) {
            return;
        }
        let Some(op) = self.op.as_mut() else {
            self.fail(&format!("StopCore of core {} outside an operation", core.0));
        };
        op.stopped.insert(core);
        if let Some(rot) = &op.rot {
            let pending = |p| self.exec.probes.contains_key(p);
            let early = rot.batch == Some(core) && rot.batch_probes.keys().any(pending);
            self.stats.early += u64::from(early);
            let untouched = core != rot.old_core || !rot.passed.is_empty();
            self.check(untouched, || {
                "the old session stopped though no candidate passed".into()
            });
        }
    }

    fn on_probe(&mut self, probe: super::ProbeId, target: Target) {
        let session = self
            .sup
            .session
            .as_ref()
            .filter(|s| s.pid_running)
            .map(|s| s.core);
        match target {
            Target::Session(core) if Some(core) == session => {
                self.check(self.op_before.is_none(), || {
                    "a health probe during an operation".into()
                });
                let alive = self
                    .exec
                    .cores
                    .get(&core)
                    .is_some_and(|c| c.life == Life::Running);
                self.check(alive, || {
                    "a health probe of a core that is not running".into()
                });
                let two = self.health_probes.values().any(|c| *c == core);
                self.check(!two, || "two health probes in flight".into());
                self.health_probes.insert(probe, core);
            }
            Target::Batch(core, config)
                if self
                    .op
                    .as_ref()
                    .is_some_and(|op| op.rot.as_ref().is_some_and(|r| r.batch == Some(core))) =>
            {
                self.rot().batch_probes.insert(probe, config);
            }
            Target::Session(core)
                if self.op.as_ref().is_some_and(|op| {
                    op.rot
                        .as_ref()
                        .is_some_and(|r| r.tried.iter().any(|t| t.0 == core))
                }) =>
            {
                self.rot().verify.insert(probe, core);
            }
            Target::Pool(core, config) if self.cfg.front => self.front_probe(probe, core, config),
            Target::Batch(core, _)
                if self
                    .op
                    .as_ref()
                    .is_some_and(|op| op.kind == Kind::Test && op.test_batch == Some(core)) => {}
            other => self.fail(&format!("a probe of {other:?} that no rule explains")),
        }
    }

    fn on_persist(&mut self, ev: &RotationEvent) {
        if !self.front_persist(ev) {
            self.persist_rotation(ev);
        }
        self.cooldown_until = self.now.monotonic_ms + self.cfg.cooldown_secs * 1000;
        if self.enabled {
            self.timer_due = Some(self.now.monotonic_ms + self.cfg.rotation_interval_secs * 1000);
        }
    }

    fn persist_rotation(&mut self, ev: &RotationEvent) {
        let ended = self
            .ended
            .as_mut()
            .and_then(|op| op.rot.as_mut())
            .filter(|r| r.persisted.is_none());
        let rot = match ended {
            Some(rot) => rot,
            None => self
                .op
                .as_mut()
                .and_then(|op| op.rot.as_mut())
                .unwrap_or_else(|| {
                    panic!(
                        "Persist outside a rotation; replay with XRAT_SIM_SEED={}",
                        self.seed
                    )
                }),
        };
        rot.persisted = Some(ev.result);
        let index = match ev.result {
            ReplaceResult::Switched => 0,
            ReplaceResult::NoWorkingCandidate => 1,
            ReplaceResult::Restored => 2,
            ReplaceResult::Failed => 3,
        };
        self.stats.results[index] += 1;
        let candidates = rot.tried.iter().filter(|t| t.1 != rot.old_config).count();
        self.stats.fallbacks += u64::from(candidates > 1);
        // A shutdown asked for while the rotation ran goes on as soon as the rotation ends, in
        // the same step, and ends whatever session it left (found at 20 M steps, seed
        // 5752828911979915448): that session is the shutdown's, not the rotation's, to judge.
        let ended_by_shutdown = self.shutting_down && self.sup.session.is_none();
        let why = judge(
            rot,
            self.sup.session.as_ref(),
            &self.exec,
            ev,
            ended_by_shutdown,
        );
        if let Err(why) = why {
            self.fail(&format!("{why}: {ev:?}"));
        }
    }

    /// A pool core's members: distinct, at most `pool_size` besides the first.
    fn check_members(&self, config_ids: &[i64]) {
        let mut sorted = config_ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let max = 1 + self.cfg.pool_size as usize;
        self.check(
            sorted.len() == config_ids.len() && !sorted.is_empty() && sorted.len() <= max,
            || {
                format!(
                    "pool members {config_ids:?} (pool_size {})",
                    self.cfg.pool_size
                )
            },
        );
    }

    fn on_shutdown(&mut self) {
        self.check_events_at_shutdown();
        self.check(!self.shutdown_seen, || "Shutdown twice".into());
        self.check(self.shutting_down, || "Shutdown nobody asked for".into());
        self.check(self.sup.session().is_none() && self.op.is_none(), || {
            "Shutdown with a session or an operation".into()
        });
        self.check(self.exec.live() == (0, 0, 0), || {
            format!("Shutdown with cores alive: {:?}", self.exec.live())
        });
        for (conn, model) in &self.conns {
            self.check(model.awaiting.is_empty(), || {
                format!(
                    "Shutdown while connection {conn} waits for {:?}",
                    model.awaiting
                )
            });
        }
        self.shutdown_seen = true;
        self.stats.shutdowns_quiet += u64::from(self.next_client_ms.is_none());
    }
}

/// Whether a rotation's recorded end agrees with what the executor saw.
fn judge(
    rot: &Rot,
    session: Option<&super::Session>,
    exec: &super::sim_exec::Exec,
    ev: &RotationEvent,
    ended_by_shutdown: bool,
) -> Result<(), &'static str> {
    let to = match ev.result {
        ReplaceResult::Switched | ReplaceResult::Restored => session.map(|s| s.info.config_id),
        _ => None,
    };
    let fields = ev.trigger == rot.trigger
        && ev.from_config_id == Some(rot.old_config)
        && (ev.to_config_id == to || ended_by_shutdown);
    let last = rot.tried.last().copied();
    let live = |core| {
        exec.cores
            .get(&core)
            .is_some_and(|c| c.life == Life::Running)
    };
    if !fields {
        return Err("the event's trigger or configs disagree with the rotation");
    }
    if ended_by_shutdown {
        return Ok(());
    }
    match ev.result {
        ReplaceResult::Switched => {
            let s = session.expect("switched without a session");
            (rot.passed.contains(&s.info.config_id)
                && rot.verified.contains(&s.core)
                && live(s.core))
            .then_some(())
            .ok_or("switched to an unverified or dead core")
        }
        ReplaceResult::NoWorkingCandidate => {
            (session.is_some_and(|s| s.info.id == rot.old_session) && rot.tried.is_empty())
                .then_some(())
                .ok_or("no_working_candidate touched the session")
        }
        // In front mode the old session may simply have kept running (make-before-break).
        ReplaceResult::Restored => session
            .filter(|s| {
                let kept = s.info.id == rot.old_session && s.core == rot.old_core;
                s.info.config_id == rot.old_config
                    && (kept || Some(s.core) == last.map(|l| l.0))
                    && live(s.core)
            })
            .map(|_| ())
            .ok_or("restored without the old config running"),
        ReplaceResult::Failed => (session.is_none()
            && last.is_some_and(|(core, config)| config == rot.old_config && !live(core)))
        .then_some(())
        .ok_or("failed without a failed restore attempt"),
    }
}
