//! Our jobs as the database knows them: which table, how a delivery names one, and what
//! applying an event did. These cross the PostgREST boundary as enums (serde), both ways.

use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

/// Which table a job lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A training, in `models`.
    Model,
    /// A prediction, in `predictions`.
    Prediction,
}

impl JobKind {
    /// The table, which is also the storage folder.
    pub fn table(self) -> &'static str {
        match self {
            JobKind::Model => "models",
            JobKind::Prediction => "predictions",
        }
    }

    /// The singular name used in answers (`model`, `prediction`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Model => "model",
            JobKind::Prediction => "prediction",
        }
    }
}

/// A job as the SQL functions describe it: a model, a prediction, or an upscale (a
/// prediction the app marked as one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Job {
    /// A training, in `models`.
    Model,
    /// A prediction, in `predictions`.
    Prediction,
    /// An upscale, also in `predictions`.
    Upscale,
}

impl Job {
    /// The table the job is in.
    pub fn kind(self) -> JobKind {
        match self {
            Job::Model => JobKind::Model,
            Job::Prediction | Job::Upscale => JobKind::Prediction,
        }
    }
}

/// How a delivery names its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRef {
    /// By our id and its owner (train and predict routes).
    Owned {
        /// Which table.
        kind: JobKind,
        /// Our row id.
        id: Uuid,
        /// The owner the URL names.
        user_id: Uuid,
    },
    /// By the Replicate id in the body (unified, completed and reconcile).
    ByReplicateId,
}

/// The SQL functions take a job reference as three parameters, all null when the job is
/// found by its Replicate id. Flattened into each RPC's argument struct.
impl Serialize for JobRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (kind, id, user_id) = match *self {
            JobRef::Owned { kind, id, user_id } => (Some(kind), Some(id), Some(user_id)),
            JobRef::ByReplicateId => (None, None, None),
        };
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("p_job_kind", &kind)?;
        map.serialize_entry("p_job_id", &id)?;
        map.serialize_entry("p_user_id", &user_id)?;
        map.end()
    }
}

/// What applying an event did, as the database recorded it in `webhook_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The event changed the job.
    Applied,
    /// Reconcile applied what Replicate's API reported.
    Reconciled,
    /// This webhook id was already applied, or the job already has this terminal status.
    Duplicate,
    /// The event is older than what is stored; nothing changed.
    Stale,
    /// No job has that id.
    NotFound,
}

impl Outcome {
    /// The name used in answers, logs and `webhook_events`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Reconciled => "reconciled",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::NotFound => "not_found",
        }
    }

    /// Whether the event changed the job.
    pub fn changed(self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Reconciled)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_reference_becomes_the_three_sql_parameters() {
        let id = Uuid::nil();
        let owned = JobRef::Owned {
            kind: JobKind::Model,
            id,
            user_id: id,
        };
        assert_eq!(
            serde_json::to_value(owned).unwrap(),
            json!({"p_job_kind": "model", "p_job_id": id, "p_user_id": id})
        );
        assert_eq!(
            serde_json::to_value(JobRef::ByReplicateId).unwrap(),
            json!({"p_job_kind": null, "p_job_id": null, "p_user_id": null})
        );
    }

    #[test]
    fn jobs_and_outcomes_read_as_the_database_writes_them() {
        let job: Job = serde_json::from_value(json!("upscale")).unwrap();
        assert_eq!(job.kind(), JobKind::Prediction);
        let outcome: Outcome = serde_json::from_value(json!("not_found")).unwrap();
        assert_eq!(outcome, Outcome::NotFound);
        assert!(serde_json::from_value::<Outcome>(json!("maybe")).is_err());
    }
}
