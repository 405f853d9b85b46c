//! Pool core processes (front mode, DESIGN §5): which members each serves and on which internal
//! inbounds, written when the process is spawned and removed when it exits, so that a restarted
//! daemon adopting the process knows where its members listen.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{Store, StoreError};

/// Columns of `pool_processes` in the order [`PoolProcessRow::from_row`] reads them.
const COLUMNS: &str = "id, pid, pid_start_time, core, core_path, config_path, log_path, started_at";

/// A pool core process just spawned, with its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPoolProcess {
    /// Its pid.
    pub pid: u32,
    /// `/proc/<pid>/stat` field 22, which tells a reused pid from this process.
    pub pid_start_time: u64,
    /// Core kind, e.g. `sing-box`.
    pub core: String,
    /// The core executable.
    pub core_path: String,
    /// Its rendered config file (shared by its members).
    pub config_path: String,
    /// Where its output goes (quoted when it exits, also after an adoption).
    pub log_path: String,
    /// Unix seconds.
    pub started_at: u64,
    /// The configs it serves.
    pub members: Vec<PoolMember>,
}

/// One config a pool core process serves, on its internal inbounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolMember {
    /// The config.
    pub config_id: i64,
    /// Internal SOCKS inbound, `host:port`.
    pub socks_addr: String,
    /// Internal HTTP inbound, `host:port`, when `runtime.http_port` is set.
    pub http_addr: Option<String>,
}

/// A recorded pool core process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolProcessRow {
    /// Row id.
    pub id: i64,
    /// Its pid.
    pub pid: u32,
    /// Its start time (see [`NewPoolProcess::pid_start_time`]).
    pub pid_start_time: u64,
    /// Core kind.
    pub core: String,
    /// The core executable.
    pub core_path: String,
    /// Its rendered config file.
    pub config_path: String,
    /// Its log.
    pub log_path: String,
    /// Unix seconds.
    pub started_at: u64,
    /// The configs it serves, by config id (a removed config's member is gone).
    pub members: Vec<PoolMember>,
}

impl PoolProcessRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<PoolProcessRow> {
        Ok(PoolProcessRow {
            id: row.get(0)?,
            pid: row.get(1)?,
            pid_start_time: row.get(2)?,
            core: row.get(3)?,
            core_path: row.get(4)?,
            config_path: row.get(5)?,
            log_path: row.get(6)?,
            started_at: row.get(7)?,
            members: Vec::new(),
        })
    }
}

impl Store {
    /// Records a spawned pool core process and its members, in one transaction. An older record
    /// of the same pid goes: a pid names one live process, so that record is stale.
    pub fn record_pool_process(&mut self, new: &NewPoolProcess) -> Result<(), StoreError> {
        let failed = |e| super::sql_error(&self.path, "record a pool core process", e);
        let tx = super::batch::write_tx(&mut self.conn).map_err(failed)?;
        tx.execute("DELETE FROM pool_processes WHERE pid = ?1", [new.pid])
            .map_err(failed)?;
        tx.execute(
            "INSERT INTO pool_processes \
             (pid, pid_start_time, core, core_path, config_path, log_path, started_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                new.pid,
                new.pid_start_time,
                new.core,
                new.core_path,
                new.config_path,
                new.log_path,
                new.started_at,
            ],
        )
        .map_err(failed)?;
        let process_id = tx.last_insert_rowid();
        // A config removed since the pool was rendered is skipped, not an error: this write is
        // retried until it succeeds, and a foreign-key failure would never stop failing.
        for member in &new.members {
            tx.execute(
                "INSERT INTO pool_members (process_id, config_id, socks_addr, http_addr) \
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM configs WHERE id = ?2)",
                params![
                    process_id,
                    member.config_id,
                    member.socks_addr,
                    member.http_addr
                ],
            )
            .map_err(failed)?;
        }
        tx.commit().map_err(failed)
    }

    /// Forgets a pool core process (it exited); its members go with it.
    pub fn forget_pool_process(&self, pid: u32, pid_start_time: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM pool_processes WHERE pid = ?1 AND pid_start_time = ?2",
                params![pid, pid_start_time],
            )
            .map_err(self.sql_error("forget a pool core process"))?;
        Ok(())
    }

    /// The recorded pool core process with this pid and start time, with its members.
    pub fn pool_process(
        &self,
        pid: u32,
        pid_start_time: u64,
    ) -> Result<Option<PoolProcessRow>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM pool_processes WHERE pid = ?1 AND pid_start_time = ?2");
        let row = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_row(params![pid, pid_start_time], PoolProcessRow::from_row)
                    .optional()
            })
            .map_err(self.sql_error("read a pool core process"))?;
        row.map(|row| self.with_members(row)).transpose()
    }

    /// Every recorded pool core process, oldest first, with its members; what a starting
    /// daemon reconciles.
    pub fn pool_processes(&self) -> Result<Vec<PoolProcessRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM pool_processes ORDER BY id");
        let rows = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map([], PoolProcessRow::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_error("list pool core processes"))?;
        rows.into_iter().map(|row| self.with_members(row)).collect()
    }

    fn with_members(&self, mut row: PoolProcessRow) -> Result<PoolProcessRow, StoreError> {
        row.members = self
            .conn
            .prepare_cached(
                "SELECT config_id, socks_addr, http_addr FROM pool_members \
                 WHERE process_id = ?1 ORDER BY rowid",
            )
            .and_then(|mut stmt| {
                stmt.query_map([row.id], |r| {
                    Ok(PoolMember {
                        config_id: r.get(0)?,
                        socks_addr: r.get(1)?,
                        http_addr: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_error("list a pool core's members"))?;
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{link, open_temp};
    use super::*;

    fn member(config_id: i64, port: u16, http: bool) -> PoolMember {
        PoolMember {
            config_id,
            socks_addr: format!("127.0.0.1:{port}"),
            http_addr: http.then(|| format!("127.0.0.1:{}", port + 1)),
        }
    }

    fn process(pid: u32, start: u64, members: Vec<PoolMember>) -> NewPoolProcess {
        NewPoolProcess {
            pid,
            pid_start_time: start,
            core: "sing-box".into(),
            core_path: "/usr/bin/sing-box".into(),
            config_path: "/r/runtime/pool-3-0.json".into(),
            log_path: "/r/logs/pool-3.log".into(),
            started_at: 100,
            members,
        }
    }

    #[test]
    fn pool_processes_keep_their_members_until_forgotten() {
        let (_dir, mut store) = open_temp();
        let links = [
            link("socks://127.0.0.1:1081"),
            link("socks://127.0.0.1:1082"),
            link("socks://127.0.0.1:1083"),
        ];
        store.import(&links, 1).unwrap();
        let first = process(
            4242,
            77,
            vec![member(2, 20001, true), member(1, 20003, true)],
        );
        store.record_pool_process(&first).unwrap();
        store
            .record_pool_process(&process(4343, 88, vec![member(3, 20005, false)]))
            .unwrap();
        let row = store.pool_process(4242, 77).unwrap().unwrap();
        assert_eq!(
            (row.pid, row.pid_start_time, row.core.as_str()),
            (4242, 77, "sing-box")
        );
        assert_eq!(row.config_path, "/r/runtime/pool-3-0.json");
        assert_eq!(row.log_path, "/r/logs/pool-3.log");
        assert_eq!(row.members, first.members, "in the order recorded");
        assert_eq!(row.members[0].http_addr.as_deref(), Some("127.0.0.1:20002"));
        // Another start time is another process.
        assert_eq!(store.pool_process(4242, 78).unwrap(), None);
        let pids: Vec<u32> = store
            .pool_processes()
            .unwrap()
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(pids, [4242, 4343]);

        store.forget_pool_process(4242, 77).unwrap();
        assert_eq!(store.pool_process(4242, 77).unwrap(), None);
        let members: i64 = store
            .conn
            .query_row("SELECT count(*) FROM pool_members", [], |r| r.get(0))
            .unwrap();
        assert_eq!(members, 1, "the forgotten process's members went with it");
    }

    #[test]
    fn a_reused_pid_replaces_the_stale_record() {
        let (_dir, mut store) = open_temp();
        store.import(&[link("socks://127.0.0.1:1081")], 1).unwrap();
        store
            .record_pool_process(&process(4242, 77, vec![member(1, 20001, false)]))
            .unwrap();
        store
            .record_pool_process(&process(4242, 99, vec![member(1, 20009, false)]))
            .unwrap();
        let all = store.pool_processes().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].pid_start_time, all[0].members[0].socks_addr.as_str()),
            (99, "127.0.0.1:20009")
        );
    }

    #[test]
    fn removed_configs_leave_the_pool_record() {
        let (_dir, mut store) = open_temp();
        let links = [
            link("socks://127.0.0.1:1081"),
            link("socks://127.0.0.1:1082"),
        ];
        store.import(&links, 1).unwrap();
        // Config 7 was never stored (or removed before the write): skipped, not an error.
        let members = vec![
            member(1, 20001, true),
            member(2, 20003, true),
            member(7, 20005, true),
        ];
        store
            .record_pool_process(&process(4242, 77, members))
            .unwrap();
        assert!(store.remove_config(1).unwrap());
        let row = store.pool_process(4242, 77).unwrap().unwrap();
        let ids: Vec<i64> = row.members.iter().map(|m| m.config_id).collect();
        assert_eq!(ids, [2]);
    }
}
