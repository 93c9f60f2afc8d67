//! Reconcile every minute from the database: `schedule_reconcile` sets up a pg_cron job
//! that posts to the reconcile URL through pg_net with the secret kept in Vault. pg_cron is
//! real (the stack preloads it); pg_net and Vault are the stack's stand-ins, which record
//! what would be sent in `net.stand_in_requests`.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// Calls an RPC through PostgREST with `key`, returning status and body.
async fn rpc(key: &str, function: &str, args: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/rpc/{function}", stack_var("POSTGREST_URL")))
        .header("apikey", key)
        .bearer_auth(key)
        .json(args)
        .send()
        .await
        .expect("PostgREST answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_database_schedule_calls_reconcile_every_minute_with_the_secret() {
    let service = stack_var("SUPABASE_SERVICE_ROLE_KEY");
    let url = format!(
        "https://app-{}.example/api/cron/reconcile",
        Uuid::new_v4().simple()
    );
    let args = |secret: &str| json!({"p_url": url, "p_cron_secret": secret});

    // Only the service role may set it up.
    let (status, _) = rpc(
        &stack_var("SUPABASE_ANON_KEY"),
        "schedule_reconcile",
        &args("x"),
    )
    .await;
    assert!(matches!(status, 401 | 403), "anon: {status}");
    // Twice (a changed secret): still one job, sending the newest secret.
    let (status, first) = rpc(&service, "schedule_reconcile", &args("old-secret")).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = rpc(&service, "schedule_reconcile", &args("cron-db-secret")).await;
    assert_eq!((status, &second), (200, &first));
    assert_eq!(
        psql("select count(*) from cron.job where jobname = 'replicate-webhooks-reconcile'").await,
        "1"
    );

    // pg_cron's finest schedule is a minute: wait for its run, not for a fixed time.
    let sent = format!(
        "select headers ->> 'Authorization' from net.stand_in_requests \
         where url = '{url}' and method = 'POST' order by id limit 1"
    );
    wait_until(
        "pg_cron's run of the reconcile job",
        Duration::from_secs(90),
        || {
            let sent = sent.clone();
            async move { !psql(&sent).await.is_empty() }
        },
    )
    .await;
    let header = psql(&sent).await;
    assert_eq!(header, "Bearer cron-db-secret");
    assert_eq!(
        psql(
            "select d.status from cron.job_run_details d join cron.job j using (jobid) \
             where j.jobname = 'replicate-webhooks-reconcile' order by d.runid desc limit 1"
        )
        .await,
        "succeeded"
    );

    // Undone by one call; a second finds nothing to undo.
    let (status, removed) = rpc(&service, "unschedule_reconcile", &json!({})).await;
    assert_eq!((status, removed), (200, json!(true)));
    let (_, again) = rpc(&service, "unschedule_reconcile", &json!({})).await;
    assert_eq!(again, json!(false));
    assert_eq!(
        psql("select count(*) from cron.job where jobname = 'replicate-webhooks-reconcile'").await,
        "0"
    );
    assert_eq!(
        psql("select count(*) from vault.decrypted_secrets where name like 'reconcile%'").await,
        "0"
    );
}

#[tokio::test]
async fn the_migrations_apply_without_pg_cron_pg_net_or_vault() {
    // A database of its own: pg_cron serves only the stack's database, and neither pg_net
    // nor Vault exists here. Supabase always has the auth schema the policies name.
    let name = format!("bare_{}", Uuid::new_v4().simple());
    psql(&format!("create database {name}")).await;
    psql_on(
        &name,
        "create schema auth; \
         create function auth.uid() returns uuid language sql stable as 'select null::uuid'",
    )
    .await
    .expect("auth stand-in");
    let pushed = push_migrations(&cli_database_url(&name));
    assert!(pushed.is_ok(), "supabase db push: {pushed:?}");
    let refused = psql_on(
        &name,
        "select public.schedule_reconcile('https://app.example/api/cron/reconcile', 's')",
    )
    .await
    .expect_err("no pg_cron here");
    for what in ["pg_cron", "pg_net", "Vault", "Database > Extensions"] {
        assert!(refused.contains(what), "{what} in {refused}");
    }
    assert!(
        !refused.contains("'s'"),
        "the secret is not echoed: {refused}"
    );
    psql(&format!("drop database {name} with (force)")).await;
}
