//! Key-value checks: create conflicts, CAS, watch, history, TTL, limits.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{always, check, ensure, fail, within, Check, CheckResult};
use crate::transport::{Capabilities, KeyValue, KvConfig, KvOperation, Transport, TransportError};

pub(super) fn checks<T: Transport + ?Sized + 'static>() -> Vec<Check<T>> {
    vec![
        check!(kv_put_get_delete_keys, always),
        check!(kv_create_conflicts, always),
        check!(kv_cas_mismatch, always),
        check!(kv_watch_sees_initial_updates_and_deletes, always),
        check!(kv_history_depth, needs_history),
        check!(kv_value_too_large_is_rejected, always),
        check!(kv_ttl_expires_entries, needs_ttl),
    ]
}

fn needs_history(caps: &Capabilities) -> Option<String> {
    (caps.kv_max_history < 3).then(|| format!("kv history limited to {}", caps.kv_max_history))
}

fn needs_ttl(caps: &Capabilities) -> Option<String> {
    (!caps.kv_ttl).then(|| "kv buckets have no TTL".to_owned())
}

async fn bucket<T: Transport + ?Sized>(
    t: &T,
    name: &str,
    history: usize,
) -> Result<Arc<dyn KeyValue>, String> {
    let mut config = KvConfig::new(name);
    config.history = history;
    t.key_value(config).await.map_err(fail("open bucket"))
}

async fn kv_put_get_delete_keys<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let kv = bucket(&*t, "conf_basic", 1).await?;
    ensure!(
        kv.get("pcs.a").await.map_err(fail("get"))?.is_none(),
        "fresh key exists"
    );
    let r1 = kv
        .put("pcs.a", Bytes::from("1"))
        .await
        .map_err(fail("put"))?;
    let r2 = kv
        .put("groups.x", Bytes::from("2"))
        .await
        .map_err(fail("put"))?;
    ensure!(r2 > r1, "revisions {r1} then {r2}");
    let entry = kv
        .get("pcs.a")
        .await
        .map_err(fail("get"))?
        .ok_or("put value missing")?;
    ensure!(entry.value == "1" && entry.revision == r1, "got {entry:?}");
    let keys = kv.keys().await.map_err(fail("keys"))?;
    ensure!(keys == ["groups.x", "pcs.a"], "keys {keys:?}");
    kv.delete("pcs.a").await.map_err(fail("delete"))?;
    ensure!(
        kv.get("pcs.a").await.map_err(fail("get"))?.is_none(),
        "deleted key still readable"
    );
    let keys = kv.keys().await.map_err(fail("keys"))?;
    ensure!(keys == ["groups.x"], "keys after delete {keys:?}");
    let reopened = bucket(&*t, "conf_basic", 1).await?;
    ensure!(
        reopened
            .get("groups.x")
            .await
            .map_err(fail("get"))?
            .is_some(),
        "re-opening the bucket lost data"
    );
    let bad = kv.put("bad key", Bytes::new()).await;
    ensure!(bad.is_err(), "a key with a space was accepted");
    Ok(())
}

async fn kv_create_conflicts<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let kv = bucket(&*t, "conf_create", 1).await?;
    kv.create("lock", Bytes::from("a"))
        .await
        .map_err(fail("create"))?;
    let again = kv.create("lock", Bytes::from("b")).await;
    ensure!(
        matches!(again, Err(TransportError::AlreadyExists { .. })),
        "second create gave {again:?}"
    );
    let value = kv
        .get("lock")
        .await
        .map_err(fail("get"))?
        .ok_or("missing")?
        .value;
    ensure!(
        value == "a",
        "the losing create overwrote the value: {value:?}"
    );
    kv.delete("lock").await.map_err(fail("delete"))?;
    kv.create("lock", Bytes::from("c"))
        .await
        .map_err(fail("create after delete"))?;
    Ok(())
}

async fn kv_cas_mismatch<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let kv = bucket(&*t, "conf_cas", 1).await?;
    let r1 = kv
        .put("counter", Bytes::from("1"))
        .await
        .map_err(fail("put"))?;
    let r2 = kv
        .update("counter", Bytes::from("2"), r1)
        .await
        .map_err(fail("update at the right revision"))?;
    let stale = kv.update("counter", Bytes::from("3"), r1).await;
    ensure!(
        matches!(stale, Err(TransportError::RevisionMismatch { expected, .. }) if expected == r1),
        "stale update gave {stale:?}"
    );
    let value = kv
        .get("counter")
        .await
        .map_err(fail("get"))?
        .ok_or("missing")?;
    ensure!(
        value.value == "2" && value.revision == r2,
        "after lost CAS: {value:?}"
    );
    let absent = kv.update("nothing", Bytes::from("x"), 5).await;
    ensure!(
        absent.is_err(),
        "update of an absent key at revision 5 succeeded"
    );
    Ok(())
}

async fn kv_watch_sees_initial_updates_and_deletes<T: Transport + ?Sized>(
    t: Arc<T>,
) -> CheckResult {
    let kv = bucket(&*t, "conf_watch", 1).await?;
    kv.put("pcs.a", Bytes::from("a1"))
        .await
        .map_err(fail("put"))?;
    kv.put("pcs.b", Bytes::from("b1"))
        .await
        .map_err(fail("put"))?;
    kv.put("groups.g", Bytes::from("g1"))
        .await
        .map_err(fail("put"))?;
    let mut watch = kv.watch("pcs.*").await.map_err(fail("watch"))?;
    let wait = Duration::from_secs(5);
    let mut initial = Vec::new();
    for _ in 0..2 {
        let e = within(wait, "initial value", watch.next())
            .await?
            .ok_or("watch ended")?;
        initial.push((e.key, e.value));
    }
    initial.sort();
    ensure!(
        initial
            == [
                ("pcs.a".to_owned(), Bytes::from("a1")),
                ("pcs.b".to_owned(), Bytes::from("b1"))
            ],
        "initial values {initial:?}"
    );
    kv.put("groups.g", Bytes::from("g2"))
        .await
        .map_err(fail("put"))?;
    kv.put("pcs.a", Bytes::from("a2"))
        .await
        .map_err(fail("put"))?;
    kv.delete("pcs.b").await.map_err(fail("delete"))?;
    let e = within(wait, "update", watch.next())
        .await?
        .ok_or("watch ended")?;
    ensure!(
        e.key == "pcs.a" && e.value == "a2" && e.operation == KvOperation::Put,
        "update seen as {e:?}"
    );
    let e = within(wait, "delete", watch.next())
        .await?
        .ok_or("watch ended")?;
    ensure!(
        e.key == "pcs.b" && e.operation == KvOperation::Delete,
        "delete seen as {e:?}"
    );
    Ok(())
}

async fn kv_history_depth<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let kv = bucket(&*t, "conf_history", 3).await?;
    for i in 1..=5 {
        kv.put("k", Bytes::from(i.to_string()))
            .await
            .map_err(fail("put"))?;
    }
    let history = kv.history("k").await.map_err(fail("history"))?;
    let values: Vec<_> = history.iter().map(|e| e.value.clone()).collect();
    ensure!(
        values == ["3", "4", "5"],
        "history {values:?}, expected the last 3"
    );
    ensure!(
        history.windows(2).all(|w| w[0].revision < w[1].revision),
        "history not in revision order"
    );
    kv.delete("k").await.map_err(fail("delete"))?;
    let history = kv.history("k").await.map_err(fail("history"))?;
    ensure!(
        history.last().map(|e| e.operation) == Some(KvOperation::Delete),
        "delete missing from history"
    );
    Ok(())
}

async fn kv_value_too_large_is_rejected<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let limit = t.capabilities().max_payload_bytes;
    let kv = bucket(&*t, "conf_large", 1).await?;
    let result = kv.put("big", Bytes::from(vec![0u8; limit + 1])).await;
    ensure!(
        matches!(result, Err(TransportError::PayloadTooLarge { .. })),
        "oversized value gave {result:?}"
    );
    Ok(())
}

async fn kv_ttl_expires_entries<T: Transport + ?Sized>(t: Arc<T>) -> CheckResult {
    let mut config = KvConfig::new("conf_ttl");
    config.ttl = Some(Duration::from_secs(1));
    let kv = t.key_value(config).await.map_err(fail("open bucket"))?;
    kv.put("short", Bytes::from("x"))
        .await
        .map_err(fail("put"))?;
    ensure!(
        kv.get("short").await.map_err(fail("get"))?.is_some(),
        "value missing at once"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(
        kv.get("short").await.map_err(fail("get"))?.is_none(),
        "value outlived its TTL"
    );
    Ok(())
}
