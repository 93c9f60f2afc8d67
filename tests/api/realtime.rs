//! Broadcast from the database: a webhook's change of a job reaches its owner's private
//! topic `user:<user_id>:jobs` (the stack's stand-in for Realtime's `realtime.messages`),
//! and Realtime's authorization check (the policy on `realtime.messages`, read with the
//! joining user's claims and topic) lets only the owner in.

use crate::helpers::*;
use serde_json::{Value, json};
use shared::routes::{Webhook, WebhookRoute};
use uuid::Uuid;

fn topic(user: Uuid) -> String {
    format!("user:{user}:jobs")
}

/// The messages sent on `user`'s topic, oldest first, as [event, private, payload].
async fn sent(user: Uuid) -> Vec<Value> {
    let rows = psql(&format!(
        "select coalesce(jsonb_agg(jsonb_build_array(event, private, payload) \
                                   order by inserted_at, id), '[]') \
         from realtime.messages where topic = '{}' and extension = 'broadcast'",
        topic(user)
    ))
    .await;
    serde_json::from_str(&rows).expect("JSON")
}

/// How many messages Realtime's check lets a client with `claims` read when it joins
/// `joined` (as Realtime does it: in a transaction, as the JWT's role, rolled back).
async fn visible(claims: &Value, joined: &str) -> String {
    psql(&format!(
        "begin; \
         set local request.jwt.claims = '{claims}'; \
         set local realtime.topic = '{joined}'; \
         set local role authenticated; \
         select count(*) from realtime.messages; \
         rollback;"
    ))
    .await
}

#[tokio::test]
async fn a_webhook_is_one_message_on_the_owners_private_topic_and_only_the_owner_receives_it() {
    let db = Db::service();
    let owner = seed_user(&db).await;
    let other = seed_user(&db).await;
    let id = seed_prediction(&db, owner, None, 2).await;
    let created = sent(owner).await;
    assert_eq!(
        created,
        vec![json!(["job_changed", true,
                    {"id": id, "kind": "prediction", "status": "pending", "output": null, "error": null}])],
        "a new job is announced"
    );

    let handler = Webhook::new(WebhookRoute::Predict, &settings());
    let rid = replicate_id();
    let uri = format!("/api/replicate/webhooks/predict?user_id={owner}&prediction_id={id}");
    let response = handler
        .call(signed_post(
            &uri,
            &fixture("prediction_processing_tokens", &rid),
        ))
        .await;
    assert_eq!(response.status().as_u16(), 200, "{}", body_json(&response));

    let after = sent(owner).await;
    assert_eq!(after.len(), 2, "one message for the webhook: {after:?}");
    let row = db.row("predictions", id).await;
    assert_eq!(
        after[1],
        json!(["job_changed", true,
               {"id": id, "kind": "prediction", "status": "processing", "output": row["output"],
                "error": null}])
    );
    assert!(row["output"].is_array(), "the output travels: {row}");
    assert!(
        sent(other).await.is_empty(),
        "nothing on another user's topic"
    );

    let claims = |user: Uuid| json!({"sub": user, "role": "authenticated"});
    assert_eq!(
        visible(&claims(owner), &topic(owner)).await,
        "2",
        "the owner joins"
    );
    assert_eq!(
        visible(&claims(other), &topic(owner)).await,
        "0",
        "another signed-in user joining the owner's topic sees nothing"
    );
    assert_eq!(visible(&claims(owner), &topic(other)).await, "0");
}
