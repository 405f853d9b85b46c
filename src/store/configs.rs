//! Stored proxy configs: one row per imported share link.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{sql_error, Store, StoreError};
use crate::links::{Outbound, ParsedLink, Protocol, Scheme};

/// Columns in the order [`StoredConfig::from_row`] reads them.
const COLUMNS: &str =
    "id, name, scheme, server, port, raw_link, outbound_json, enabled, created_at";

/// A stored config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigRow {
    /// Stable id; never reused after removal.
    pub id: i64,
    /// Name from the link, or `<scheme> <host>:<port>`.
    pub name: String,
    /// Link scheme (`vmess`, `vless`, `trojan`, `ss`, `socks`).
    pub scheme: String,
    /// Server host or IP (IPv6 without brackets).
    pub server: String,
    /// Server port.
    pub port: u16,
    /// The share link exactly as imported.
    pub raw_link: String,
    /// The parsed outbound.
    pub outbound: Outbound,
    /// Whether rotation and `runtime_connect` may use it.
    pub enabled: bool,
    /// Import time, unix seconds.
    pub created_at: u64,
}

/// What [`Store::import`] did with one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ImportOutcome {
    /// Stored as a new config.
    Imported {
        /// The new config's id.
        id: i64,
        /// Its name.
        name: String,
    },
    /// The same link text is already stored; nothing was written.
    Duplicate {
        /// The stored config's id.
        existing_id: i64,
        /// The stored config's name.
        name: String,
    },
}

/// A row as read, before the outbound JSON is decoded (decoding needs the path for its error).
struct StoredConfig {
    id: i64,
    name: String,
    scheme: String,
    server: String,
    port: u16,
    raw_link: String,
    outbound_json: String,
    enabled: bool,
    created_at: u64,
}

impl StoredConfig {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<StoredConfig> {
        Ok(StoredConfig {
            id: row.get(0)?,
            name: row.get(1)?,
            scheme: row.get(2)?,
            server: row.get(3)?,
            port: row.get(4)?,
            raw_link: row.get(5)?,
            outbound_json: row.get(6)?,
            enabled: row.get(7)?,
            created_at: row.get(8)?,
        })
    }

    fn decode(self, store: &Store) -> Result<ConfigRow, StoreError> {
        let outbound =
            serde_json::from_str(&self.outbound_json).map_err(|e| StoreError::Corrupt {
                path: store.path.clone(),
                id: self.id,
                detail: e.to_string(),
            })?;
        Ok(ConfigRow {
            id: self.id,
            name: self.name,
            scheme: self.scheme,
            server: self.server,
            port: self.port,
            raw_link: self.raw_link,
            outbound,
            enabled: self.enabled,
            created_at: self.created_at,
        })
    }
}

/// The scheme a protocol is shared as; `socks5://` links are stored as `socks`.
pub fn scheme_of(protocol: &Protocol) -> Scheme {
    match protocol {
        Protocol::Vmess { .. } => Scheme::Vmess,
        Protocol::Vless { .. } => Scheme::Vless,
        Protocol::Trojan { .. } => Scheme::Trojan,
        Protocol::Shadowsocks { .. } => Scheme::Shadowsocks,
        Protocol::Socks { .. } => Scheme::Socks,
        Protocol::Hysteria2 { .. } => Scheme::Hysteria2,
        Protocol::Tuic { .. } => Scheme::Tuic,
        Protocol::Anytls { .. } => Scheme::Anytls,
        Protocol::Http { .. } => Scheme::Http,
        Protocol::Wireguard { .. } => Scheme::Wireguard,
    }
}

impl Store {
    /// Stores every link whose exact text is not stored yet, in one transaction: on any error
    /// nothing is written. Outcomes are in the order of `links`; a link repeated within `links`
    /// is a duplicate of its first occurrence.
    pub fn import(
        &mut self,
        links: &[ParsedLink],
        now: u64,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        let path = &self.path;
        let failed = |e| sql_error(path, "import configs", e);
        let tx = super::batch::write_tx(&mut self.conn).map_err(failed)?;
        let mut outcomes = Vec::with_capacity(links.len());
        {
            let mut find = tx
                .prepare_cached("SELECT id, name FROM configs WHERE raw_link = ?1")
                .map_err(failed)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO configs \
                     (name, scheme, server, port, raw_link, outbound_json, enabled, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)",
                )
                .map_err(failed)?;
            for link in links {
                let existing = find
                    .query_row([&link.raw], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
                    .map_err(failed)?;
                if let Some((existing_id, name)) = existing {
                    outcomes.push(ImportOutcome::Duplicate { existing_id, name });
                    continue;
                }
                // Plain data with string keys: serialising cannot fail.
                let json = serde_json::to_string(&link.outbound).expect("outbound serializes");
                let outbound = &link.outbound;
                insert
                    .execute(params![
                        link.name,
                        scheme_of(&outbound.protocol).as_str(),
                        outbound.server,
                        outbound.port,
                        link.raw,
                        json,
                        now,
                    ])
                    .map_err(failed)?;
                outcomes.push(ImportOutcome::Imported {
                    id: tx.last_insert_rowid(),
                    name: link.name.clone(),
                });
            }
        }
        tx.commit().map_err(failed)?;
        Ok(outcomes)
    }

    /// Every stored config, by id.
    pub fn configs(&self) -> Result<Vec<ConfigRow>, StoreError> {
        self.query_configs("", "list configs")
    }

    /// The enabled configs (rotation candidates), by id.
    pub fn enabled_configs(&self) -> Result<Vec<ConfigRow>, StoreError> {
        self.query_configs("WHERE enabled = 1", "list enabled configs")
    }

    /// The stored name of a config, or `None` when the id is not stored (no decoding).
    pub fn config_name(&self, id: i64) -> Result<Option<String>, StoreError> {
        let failed = self.sql_error("read a config's name");
        self.conn
            .prepare_cached("SELECT name FROM configs WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
            .map_err(failed)
    }

    /// One config, or `None` when the id is not stored.
    pub fn config(&self, id: i64) -> Result<Option<ConfigRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM configs WHERE id = ?1");
        let failed = self.sql_error("read a config");
        let stored = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([id], StoredConfig::from_row).optional())
            .map_err(failed)?;
        stored.map(|stored| stored.decode(self)).transpose()
    }

    /// Removes a config; its sessions and rotation events stay, with the config id cleared.
    /// Returns whether it existed.
    pub fn remove_config(&self, id: i64) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .execute("DELETE FROM configs WHERE id = ?1", [id])
            .map_err(self.sql_error("remove a config"))?;
        Ok(changed > 0)
    }

    /// Enables or disables a config. Returns whether it exists (setting the current value again
    /// counts as found).
    pub fn set_enabled(&self, id: i64, enabled: bool) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE configs SET enabled = ?2 WHERE id = ?1",
                params![id, enabled],
            )
            .map_err(self.sql_error("enable or disable a config"))?;
        Ok(changed > 0)
    }

    fn query_configs(
        &self,
        filter: &str,
        action: &'static str,
    ) -> Result<Vec<ConfigRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM configs {filter} ORDER BY id");
        let stored = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map([], StoredConfig::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_error(action))?;
        stored.into_iter().map(|row| row.decode(self)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{link, open_temp};
    use super::*;

    #[test]
    fn import_stores_rows_and_dedupes() {
        let (_dir, mut store) = open_temp();
        let vless = link("vless://id@example.com:443?security=tls#A");
        let socks = link("socks5://[2001:db8::1]:1080");
        let outcomes = store
            .import(
                &[vless.clone(), socks.clone(), vless.clone()],
                1_700_000_000,
            )
            .unwrap();
        assert_eq!(
            outcomes,
            vec![
                ImportOutcome::Imported {
                    id: 1,
                    name: "A".into()
                },
                ImportOutcome::Imported {
                    id: 2,
                    name: "socks [2001:db8::1]:1080".into()
                },
                ImportOutcome::Duplicate {
                    existing_id: 1,
                    name: "A".into()
                },
            ]
        );
        let again = store.import(std::slice::from_ref(&socks), 1).unwrap();
        assert_eq!(
            again,
            vec![ImportOutcome::Duplicate {
                existing_id: 2,
                name: "socks [2001:db8::1]:1080".into()
            }]
        );
        let rows = store.configs().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].scheme, "socks");
        assert_eq!(rows[1].server, "2001:db8::1");
        assert_eq!(rows[1].port, 1080);
        assert_eq!(rows[1].raw_link, socks.raw);
        assert_eq!(rows[1].outbound, socks.outbound);
        assert!(rows[1].enabled);
        assert_eq!(rows[1].created_at, 1_700_000_000);
        assert_eq!(store.config(1).unwrap().unwrap(), rows[0]);
        assert_eq!(store.config(99).unwrap(), None);
    }

    #[test]
    fn enable_disable_remove() {
        let (_dir, mut store) = open_temp();
        let links = [
            link("trojan://pw@a.example:443#T"),
            link("ss://aes-256-gcm:pw@192.0.2.1:8388#S"),
        ];
        store.import(&links, 5).unwrap();
        assert!(store.set_enabled(1, false).unwrap());
        assert!(store.set_enabled(1, false).unwrap());
        assert!(!store.set_enabled(7, false).unwrap());
        let enabled: Vec<i64> = store
            .enabled_configs()
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(enabled, [2]);
        assert!(!store.config(1).unwrap().unwrap().enabled);
        assert!(store.remove_config(2).unwrap());
        assert!(!store.remove_config(2).unwrap());
        // Ids are not reused after removing the highest one.
        let outcomes = store.import(&[link("socks://127.0.0.1:1081")], 6).unwrap();
        assert!(matches!(outcomes[0], ImportOutcome::Imported { id: 3, .. }));
    }

    #[test]
    fn unreadable_outbound_is_named() {
        let (_dir, mut store) = open_temp();
        store
            .import(&[link("trojan://pw@a.example:443")], 5)
            .unwrap();
        store
            .conn
            .execute("UPDATE configs SET outbound_json = '{\"x\":1}'", [])
            .unwrap();
        let err = store.configs().unwrap_err().to_string();
        let expected = format!(
            "database {}: config 1 has an unreadable outbound",
            store.path().display()
        );
        assert!(err.starts_with(&expected), "{err}");
        assert!(err.ends_with("remove it with `xrat config remove 1` and import its link again"));
    }
}
