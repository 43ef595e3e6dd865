//! Issue 16: `/healthz` tells the truth a readiness probe needs. A Redis primary that answers
//! PING but refuses writes (`min-replicas-to-write` with no replica: `NOREPLICAS`) is not
//! healthy, and the metrics say the store is down while keeping the last pool view.

use crate::harness::*;
use crate::redis::{OwnRedis, Prefix};
use std::time::Duration;

async fn healthz(g: &Gateway) -> (u16, serde_json::Value) {
    let r = client().get(g.admin_url("/healthz")).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or_default())
}

fn config_set(url: &str, key: &str, value: &str) {
    let c = redis::Client::open(url).unwrap();
    let mut con = c
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query(&mut con)
        .unwrap();
}

#[tokio::test]
async fn healthz_is_503_while_the_store_refuses_writes() {
    let up = upstream("SID").await;
    let rs = OwnRedis::start(free_port()).await;
    let p = Prefix::on(&rs.url());
    let mut vars = basic_vars(&up, 2);
    set(&mut vars, "sweep", "200ms");
    let yaml = BASIC.replace(
        "  kind: embedded\n  path: \"{dir}/seats.redb\"",
        &format!(
            "  kind: redis\n  redis: {{ url: \"{}\", prefix: \"{}\" }}",
            rs.url(),
            p.name
        ),
    );
    assert_ne!(yaml, BASIC, "the store lines of BASIC changed");
    let g = Gateway::start(&yaml, &vars).await;
    assert_eq!(login(&g, "ann", PASSWORD, None).await.status(), 302);
    assert_eq!(healthz(&g).await.0, 200);
    assert_eq!(g.metric(r#"seatgate_store_up{product="crm"}"#).await, 1.0);

    // The primary now refuses every write but still answers PING.
    config_set(&rs.url(), "min-replicas-to-write", "1");
    let down = eventually(Duration::from_secs(5), || async {
        healthz(&g).await.0 == 503
    })
    .await;
    let (_, body) = healthz(&g).await;
    assert!(down, "healthz stayed 200 while writes fail: {body}");
    assert!(
        body.to_string().contains("NOREPLICAS"),
        "healthz does not name the error: {body}"
    );
    assert_eq!(g.metric(r#"seatgate_store_up{product="crm"}"#).await, 0.0);
    // The last view is still exported, its age growing.
    assert_eq!(
        g.metric(r#"seatgate_seats_capacity{product="crm"}"#).await,
        2.0
    );
    assert!(
        g.metrics()
            .await
            .contains("seatgate_pool_view_age_seconds{pool=\"default\",product=\"crm\"}"),
        "no view age"
    );
    // A login cannot take a seat meanwhile (fail_closed): a clear 503, not a crash.
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 503);

    // Writes work again: healthy after the next write (the sweep writes every 200 ms).
    config_set(&rs.url(), "min-replicas-to-write", "0");
    let back = eventually(Duration::from_secs(5), || async {
        healthz(&g).await.0 == 200
    })
    .await;
    assert!(back, "healthz never recovered: {:?}", healthz(&g).await);
    assert_eq!(g.metric(r#"seatgate_store_up{product="crm"}"#).await, 1.0);
}
