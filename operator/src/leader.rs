//! Leader election through a `coordination.k8s.io/v1` Lease, so that only
//! one of several operator replicas runs the controller.
//!
//! Every write is a create or a replace carrying the `resourceVersion` that
//! was read, so when two replicas race for a free or expired Lease the API
//! server lets exactly one of them win; the other gets a conflict and stays
//! a follower.
//!
//! Expiry is judged by the follower's own clock, not by the holder's
//! `renewTime`: a Lease is expired when its `resourceVersion` has not
//! changed for `leaseDurationSeconds` since this replica first saw it (what
//! client-go does), so clock skew between nodes does not matter.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// The name of the Lease every replica competes for.
pub const LEASE_NAME: &str = "marketplace-operator";

/// How long a Lease stays held without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

/// How often the leader renews.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);

/// How often a follower looks at the Lease.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// How long the leader keeps leading when it cannot reach the API server:
/// it must stop before the others may take over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// One replica's candidacy for the Lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    /// The Lease's resourceVersion as last seen, and when it was first seen.
    observed: Mutex<Option<(String, Instant)>>,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Acquires the Lease if it is free or expired, or renews it if this
    /// replica holds it. `Ok(true)` when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(now, 0)),
            };
            return written(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let spec = if holder == self.identity {
            LeaseSpec {
                renew_time: Some(now),
                lease_duration_seconds: Some(duration_seconds()),
                ..spec
            }
        } else if holder.is_empty() || self.expired(&lease, &spec) {
            let transitions = spec.lease_transitions.unwrap_or(0);
            self.held_spec(now, transitions.saturating_add(1))
        } else {
            return Ok(false);
        };
        lease.spec = Some(spec);
        // The read resourceVersion stays in the metadata: the replace fails
        // with a conflict if anyone wrote in between.
        written(
            self.api
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Gives the Lease up if this replica holds it, so that a follower takes
    /// over at once instead of after [`LEASE_DURATION`].
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            acquire_time: None,
            renew_time: None,
            ..spec
        });
        written(
            self.api
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await,
        )
        .map(|_| ())
    }

    fn held_spec(&self, now: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_seconds()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Whether the Lease has gone unrenewed for its duration, by this
    /// replica's clock.
    fn expired(&self, lease: &Lease, spec: &LeaseSpec) -> bool {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .and_then(|seconds| u64::try_from(seconds).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        let mut observed = self
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*observed {
            Some((seen, since)) if *seen == version => since.elapsed() >= duration,
            _ => {
                *observed = Some((version, Instant::now()));
                false
            }
        }
    }
}

fn duration_seconds() -> i32 {
    i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(i32::MAX)
}

/// A create or replace: a conflict (someone else wrote first) means "not
/// ours"; other errors are errors.
fn written(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// This replica's identity: the pod name (or host name) and a random
/// suffix, so two processes on one host are two candidates.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "marketplace-operator".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}
