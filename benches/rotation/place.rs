//! CPU placement: the client side (this process's measuring threads, the HTTP target, the
//! source server) on one CPU, the systems under test (xrat's daemon and its cores, mihomo, the
//! remote servers) on another. A child inherits the CPU set of the thread that forks it, so a
//! system is started inside [`Place::as_server`] and everything it spawns later stays there.

use std::io;

/// `XRAT_BENCH_PIN`: "split" (default), or "off" (left to the scheduler).
pub const PIN_ENV: &str = "XRAT_BENCH_PIN";

/// Where the client and the systems run.
pub struct Place {
    sets: Option<(libc::cpu_set_t, libc::cpu_set_t)>,
    /// What the report says about the layout.
    pub describe: String,
}

impl Place {
    /// The layout from [`PIN_ENV`]; pins the calling thread (the client) at once.
    pub fn from_env() -> Place {
        let layout = std::env::var(PIN_ENV).unwrap_or_default();
        let cpus = allowed_cpus();
        let place = match (layout.as_str(), &cpus[..]) {
            ("" | "split", [client, server, ..]) => Place {
                sets: Some((cpu_set(*client), cpu_set(*server))),
                describe: format!("client on CPU {client}, systems under test on CPU {server}"),
            },
            ("" | "split", _) => Place {
                sets: None,
                describe: "not pinned (fewer than 2 CPUs allowed)".into(),
            },
            ("off" | "0", _) => Place {
                sets: None,
                describe: "not pinned".into(),
            },
            (other, _) => panic!("{PIN_ENV}={other:?}: expected split or off"),
        };
        if let Some((client, _)) = &place.sets {
            if let Err(error) = set_affinity(client) {
                eprintln!("note: cannot pin ({error}); nothing is pinned");
                return Place {
                    sets: None,
                    describe: format!("not pinned ({error})"),
                };
            }
        }
        place
    }

    /// Runs `start` (which spawns processes) on the systems' CPU, then moves back.
    pub fn as_server<T>(&self, start: impl FnOnce() -> T) -> T {
        let Some((client, server)) = &self.sets else {
            return start();
        };
        set_affinity(server).expect("pin to the systems' CPU");
        let value = start();
        set_affinity(client).expect("pin back to the client's CPU");
        value
    }
}

/// The CPUs this thread may run on, ascending.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; size and pointer describe `set`.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: every index is below CPU_SETSIZE, the capacity of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from `allowed_cpus`, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: pid 0 is the calling thread; size and pointer describe `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
