//! Subscriptions and their member configs (migration 3). An update applies a whole fetched
//! list in one IMMEDIATE transaction: added, updated (same identity key, new name or link),
//! unchanged, and removed (no longer listed: disabled and stamped, never deleted).

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::configs::scheme_of;
use super::{sql_error, Store, StoreError};
use crate::links::ParsedLink;
use crate::subs::{identity_key, UserInfo};

const COLUMNS: &str = "s.id, s.name, s.url, s.interval_secs, s.via_proxy, s.ca_file, \
    s.user_agent, s.created_at, s.last_fetch_at, s.last_status, s.last_error, \
    s.last_success_at, s.upload_bytes, s.download_bytes, s.total_bytes, s.expire_at, \
    (SELECT COUNT(*) FROM configs c WHERE c.subscription_id = s.id AND c.dropped_at IS NULL), \
    (SELECT COUNT(*) FROM configs c WHERE c.subscription_id = s.id AND c.enabled = 1)";

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionRow {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The URL fetched.
    pub url: String,
    /// Refresh period.
    pub interval_secs: u64,
    /// Fetch through the running session's SOCKS port.
    pub via_proxy: bool,
    /// Extra trusted CA file.
    pub ca_file: Option<String>,
    /// User-agent override.
    pub user_agent: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Last fetch attempt, unix seconds.
    pub last_fetch_at: Option<u64>,
    /// `ok` or `error`.
    pub last_status: Option<String>,
    /// Why the last fetch failed.
    pub last_error: Option<String>,
    /// Last successful update.
    pub last_success_at: Option<u64>,
    /// The provider's `subscription-userinfo`.
    pub userinfo: UserInfo,
    /// Members the provider still lists.
    pub configs: u64,
    /// Of all members, those enabled.
    pub enabled: u64,
}

impl SubscriptionRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<SubscriptionRow> {
        Ok(SubscriptionRow {
            id: row.get(0)?,
            name: row.get(1)?,
            url: row.get(2)?,
            interval_secs: row.get(3)?,
            via_proxy: row.get(4)?,
            ca_file: row.get(5)?,
            user_agent: row.get(6)?,
            created_at: row.get(7)?,
            last_fetch_at: row.get(8)?,
            last_status: row.get(9)?,
            last_error: row.get(10)?,
            last_success_at: row.get(11)?,
            userinfo: UserInfo {
                upload: row.get(12)?,
                download: row.get(13)?,
                total: row.get(14)?,
                expire: row.get(15)?,
            },
            configs: row.get(16)?,
            enabled: row.get(17)?,
        })
    }

    /// Whether a refresh is due at `now`.
    pub fn is_due(&self, now: u64) -> bool {
        self.last_fetch_at
            .is_none_or(|at| at.saturating_add(self.interval_secs) <= now)
    }
}

/// What `sub add` stores.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    /// Unique name.
    pub name: String,
    /// URL.
    pub url: String,
    /// Refresh period.
    pub interval_secs: u64,
    /// Through the session.
    pub via_proxy: bool,
    /// CA file.
    pub ca_file: Option<String>,
    /// User-agent.
    pub user_agent: Option<String>,
}

/// What one update did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpdateCounts {
    /// New members.
    pub added: u64,
    /// Members whose name, link or settings changed (or that came back after being dropped).
    pub updated: u64,
    /// Members exactly as stored.
    pub unchanged: u64,
    /// Members no longer listed, now disabled.
    pub removed: u64,
    /// Entries not stored, with the reason (`line 3: …`).
    pub skipped: Vec<String>,
}

/// What `sub remove` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemovedSubscription {
    /// Member configs deleted.
    pub deleted: u64,
    /// Member configs kept as plain configs (`--keep-configs`, or in use and then disabled).
    pub kept: u64,
}

struct Member {
    id: i64,
    name: String,
    raw_link: String,
    outbound_json: String,
    dropped: bool,
}

impl Store {
    /// Every subscription, by name.
    pub fn subscriptions(&self) -> Result<Vec<SubscriptionRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM subscriptions s ORDER BY s.name");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map([], SubscriptionRow::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_error("list subscriptions"))
    }

    /// One subscription by name.
    pub fn subscription(&self, name: &str) -> Result<SubscriptionRow, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM subscriptions s WHERE s.name = ?1");
        let row = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([name], SubscriptionRow::from_row).optional())
            .map_err(self.sql_error("read a subscription"))?;
        row.ok_or_else(|| StoreError::NoSuchSubscription {
            path: self.path.clone(),
            name: name.to_owned(),
        })
    }

    /// Ids of a subscription's member configs (dropped ones included).
    pub fn subscription_members(&self, id: i64) -> Result<Vec<i64>, StoreError> {
        self.conn
            .prepare_cached("SELECT id FROM configs WHERE subscription_id = ?1 ORDER BY id")
            .and_then(|mut stmt| {
                stmt.query_map([id], |row| row.get(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()
            })
            .map_err(self.sql_error("list a subscription's configs"))
    }

    /// Stores a new subscription with its first fetch, in one transaction.
    pub fn add_subscription(
        &mut self,
        new: &NewSubscription,
        links: &[(String, ParsedLink)],
        userinfo: Option<UserInfo>,
        now: u64,
    ) -> Result<UpdateCounts, StoreError> {
        let path = self.path.clone();
        let failed = |e| sql_error(&path, "add a subscription", e);
        let tx = super::batch::write_tx(&mut self.conn).map_err(failed)?;
        let taken: Option<i64> = tx
            .query_row(
                "SELECT id FROM subscriptions WHERE name = ?1",
                [&new.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(failed)?;
        if taken.is_some() {
            return Err(StoreError::SubscriptionExists {
                path: path.clone(),
                name: new.name.clone(),
            });
        }
        tx.execute(
            "INSERT INTO subscriptions \
             (name, url, interval_secs, via_proxy, ca_file, user_agent, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                new.name,
                new.url,
                new.interval_secs,
                new.via_proxy,
                new.ca_file,
                new.user_agent,
                now
            ],
        )
        .map_err(failed)?;
        let id = tx.last_insert_rowid();
        let counts = apply(&tx, id, links, userinfo, now).map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(counts)
    }

    /// Applies a fetched list to subscription `id`, in one transaction.
    pub fn update_subscription(
        &mut self,
        id: i64,
        links: &[(String, ParsedLink)],
        userinfo: Option<UserInfo>,
        now: u64,
    ) -> Result<UpdateCounts, StoreError> {
        let path = self.path.clone();
        let failed = |e| sql_error(&path, "update a subscription", e);
        let tx = super::batch::write_tx(&mut self.conn).map_err(failed)?;
        let counts = apply(&tx, id, links, userinfo, now).map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(counts)
    }

    /// Records a failed fetch; the members are not touched.
    pub fn subscription_failed(&self, id: i64, error: &str, now: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE subscriptions SET last_fetch_at = ?2, last_status = 'error', \
                 last_error = ?3 WHERE id = ?1",
                params![id, now, error],
            )
            .map_err(self.sql_error("record a failed subscription fetch"))?;
        Ok(())
    }

    /// Removes a subscription. Its configs are deleted, except with `keep_configs` and except
    /// those in use (an open session or a pool core's member), which are detached (and the
    /// latter disabled) instead.
    pub fn remove_subscription(
        &mut self,
        name: &str,
        keep_configs: bool,
    ) -> Result<RemovedSubscription, StoreError> {
        let id = self.subscription(name)?.id;
        let path = self.path.clone();
        let failed = |e| sql_error(&path, "remove a subscription", e);
        let tx = super::batch::write_tx(&mut self.conn).map_err(failed)?;
        let in_use = "(id IN (SELECT config_id FROM runtime_sessions WHERE ended_at IS NULL \
            AND config_id IS NOT NULL) OR id IN (SELECT config_id FROM pool_members))";
        let mut removed = RemovedSubscription::default();
        if keep_configs {
            removed.kept = tx
                .execute(
                    "UPDATE configs SET subscription_id = NULL, identity_key = NULL, \
                     dropped_at = NULL WHERE subscription_id = ?1",
                    [id],
                )
                .map_err(failed)? as u64;
        } else {
            removed.kept = tx
                .execute(
                    &format!(
                        "UPDATE configs SET subscription_id = NULL, identity_key = NULL, \
                         dropped_at = NULL, enabled = 0 WHERE subscription_id = ?1 AND {in_use}"
                    ),
                    [id],
                )
                .map_err(failed)? as u64;
            removed.deleted = tx
                .execute("DELETE FROM configs WHERE subscription_id = ?1", [id])
                .map_err(failed)? as u64;
        }
        tx.execute("DELETE FROM subscriptions WHERE id = ?1", [id])
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(removed)
    }
}

fn members(tx: &Connection, id: i64) -> rusqlite::Result<HashMap<String, Member>> {
    let mut stmt = tx.prepare_cached(
        "SELECT identity_key, id, name, raw_link, outbound_json, dropped_at IS NOT NULL \
         FROM configs WHERE subscription_id = ?1",
    )?;
    let rows = stmt.query_map([id], |row| {
        let member = Member {
            id: row.get(1)?,
            name: row.get(2)?,
            raw_link: row.get(3)?,
            outbound_json: row.get(4)?,
            dropped: row.get(5)?,
        };
        Ok((row.get::<_, String>(0)?, member))
    })?;
    rows.collect()
}

/// The body of an update: `links` are (label, link) in the provider's order.
fn apply(
    tx: &Connection,
    id: i64,
    links: &[(String, ParsedLink)],
    userinfo: Option<UserInfo>,
    now: u64,
) -> rusqlite::Result<UpdateCounts> {
    let existing = members(tx, id)?;
    let mut counts = UpdateCounts::default();
    let mut seen = HashSet::new();
    for (label, link) in links {
        let key = identity_key(&link.outbound);
        if !seen.insert(key.clone()) {
            counts.skipped.push(format!(
                "{label}: the same server and account as an earlier entry"
            ));
            continue;
        }
        // Plain data with string keys: serialising cannot fail.
        let json = serde_json::to_string(&link.outbound).expect("outbound serializes");
        let other = owner_of_link(tx, &link.raw)?;
        match existing.get(&key) {
            Some(m) if m.name == link.name && m.raw_link == link.raw && m.outbound_json == json => {
                if m.dropped {
                    revive(tx, m.id, link, &json)?;
                    counts.updated += 1;
                } else {
                    counts.unchanged += 1;
                }
            }
            Some(m) => match other.filter(|owner| *owner != m.id) {
                Some(owner) => counts.skipped.push(format!(
                    "{label}: its link is already stored as config {owner}"
                )),
                None => {
                    revive(tx, m.id, link, &json)?;
                    counts.updated += 1;
                }
            },
            None => match other {
                Some(owner) => counts.skipped.push(format!(
                    "{label}: its link is already stored as config {owner}"
                )),
                None => {
                    insert(tx, id, &key, link, &json, now)?;
                    counts.added += 1;
                }
            },
        }
    }
    for (key, m) in &existing {
        if !seen.contains(key) && !m.dropped {
            tx.execute(
                "UPDATE configs SET enabled = 0, dropped_at = ?2 WHERE id = ?1",
                params![m.id, now],
            )?;
            counts.removed += 1;
        }
    }
    let info = userinfo.unwrap_or_default();
    tx.execute(
        "UPDATE subscriptions SET last_fetch_at = ?2, last_status = 'ok', last_error = NULL, \
         last_success_at = ?2, upload_bytes = ?3, download_bytes = ?4, total_bytes = ?5, \
         expire_at = ?6 WHERE id = ?1",
        params![id, now, info.upload, info.download, info.total, info.expire],
    )?;
    Ok(counts)
}

fn owner_of_link(tx: &Connection, raw: &str) -> rusqlite::Result<Option<i64>> {
    tx.prepare_cached("SELECT id FROM configs WHERE raw_link = ?1")?
        .query_row([raw], |row| row.get(0))
        .optional()
}

/// Rewrites a member from its new entry; one that had been dropped is enabled again (it was
/// disabled by the drop, not by a person).
fn revive(tx: &Connection, id: i64, link: &ParsedLink, json: &str) -> rusqlite::Result<()> {
    let outbound = &link.outbound;
    tx.prepare_cached(
        "UPDATE configs SET name = ?2, scheme = ?3, server = ?4, port = ?5, raw_link = ?6, \
         outbound_json = ?7, enabled = CASE WHEN dropped_at IS NULL THEN enabled ELSE 1 END, \
         dropped_at = NULL WHERE id = ?1",
    )?
    .execute(params![
        id,
        link.name,
        scheme_of(&outbound.protocol).as_str(),
        outbound.server,
        outbound.port,
        link.raw,
        json
    ])?;
    Ok(())
}

fn insert(
    tx: &Connection,
    subscription: i64,
    key: &str,
    link: &ParsedLink,
    json: &str,
    now: u64,
) -> rusqlite::Result<()> {
    let outbound = &link.outbound;
    tx.prepare_cached(
        "INSERT INTO configs (name, scheme, server, port, raw_link, outbound_json, enabled, \
         created_at, subscription_id, identity_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, ?9)",
    )?
    .execute(params![
        link.name,
        scheme_of(&outbound.protocol).as_str(),
        outbound.server,
        outbound.port,
        link.raw,
        json,
        now,
        subscription,
        key
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{link, open_temp};
    use super::*;

    fn new(name: &str) -> NewSubscription {
        NewSubscription {
            name: name.into(),
            url: "https://example.com/s".into(),
            interval_secs: 3600,
            via_proxy: false,
            ca_file: None,
            user_agent: None,
        }
    }

    fn labelled(links: &[&str]) -> Vec<(String, ParsedLink)> {
        links
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("line {}", i + 1), link(l)))
            .collect()
    }

    #[test]
    fn update_counts_and_drops() {
        let (_dir, mut store) = open_temp();
        let first = labelled(&[
            "trojan://a@a.example:443#A",
            "trojan://b@b.example:443#B",
            "trojan://c@c.example:443#C",
        ]);
        let counts = store.add_subscription(&new("p"), &first, None, 10).unwrap();
        assert_eq!(
            (
                counts.added,
                counts.updated,
                counts.unchanged,
                counts.removed
            ),
            (3, 0, 0, 0)
        );
        assert!(matches!(
            store.add_subscription(&new("p"), &first, None, 10),
            Err(StoreError::SubscriptionExists { .. })
        ));
        let second = labelled(&[
            "trojan://a@a.example:443#A",
            "trojan://b@b.example:443#B%20renamed",
            "trojan://d@d.example:443#D",
            "trojan://d@d.example:443#D%20again",
        ]);
        let id = store.subscription("p").unwrap().id;
        let counts = store
            .update_subscription(
                id,
                &second,
                Some(UserInfo {
                    total: Some(5),
                    ..UserInfo::default()
                }),
                20,
            )
            .unwrap();
        assert_eq!(
            (
                counts.added,
                counts.updated,
                counts.unchanged,
                counts.removed
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(counts.skipped.len(), 1);
        let rows = store.configs().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].name, "B renamed");
        assert!(!rows[2].enabled, "dropped C is disabled, not deleted");
        let sub = store.subscription("p").unwrap();
        assert_eq!(
            (sub.configs, sub.enabled, sub.userinfo.total),
            (3, 3, Some(5))
        );
        // C comes back: enabled again.
        let counts = store.update_subscription(id, &first, None, 30).unwrap();
        assert_eq!(
            (
                counts.added,
                counts.updated,
                counts.unchanged,
                counts.removed
            ),
            (0, 2, 1, 1)
        );
        assert!(store.config(3).unwrap().unwrap().enabled);
        let removed = store.remove_subscription("p", false).unwrap();
        assert_eq!(
            removed,
            RemovedSubscription {
                deleted: 4,
                kept: 0
            }
        );
        assert!(store.configs().unwrap().is_empty());
    }
}
