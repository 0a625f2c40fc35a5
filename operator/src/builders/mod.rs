//! The reconciler's "build" step: pure functions from a [`Marketplace`] to
//! the Kubernetes objects it needs. No I/O here; every builder is unit-tested
//! on plain fixtures, and the reconciler applies what they return with
//! server-side apply.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::Marketplace;

pub mod gateway;
pub mod monitoring;
pub mod services;
pub mod stores;

/// The field manager of every server-side apply, and the value of the
/// `app.kubernetes.io/managed-by` label.
pub const MANAGER: &str = "marketplace-operator";

/// `app.kubernetes.io/name` of every child.
pub const APP_NAME: &str = "marketplace";

/// The parts of a marketplace that get objects of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Gateway,
    Account,
    Catalog,
    Order,
    /// The managed PostgreSQL of the account service.
    AccountDatabase,
    /// The managed PostgreSQL of the order service.
    OrderDatabase,
    /// The managed Elasticsearch of the catalog service.
    Search,
}

impl Component {
    pub const ALL: [Self; 7] = [
        Self::Gateway,
        Self::Account,
        Self::Catalog,
        Self::Order,
        Self::AccountDatabase,
        Self::OrderDatabase,
        Self::Search,
    ];

    /// The `app.kubernetes.io/component` label value and the suffix of the
    /// children's names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Account => "account",
            Self::Catalog => "catalog",
            Self::Order => "order",
            Self::AccountDatabase => "account-db",
            Self::OrderDatabase => "order-db",
            Self::Search => "search",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a component's objects: `<marketplace>-<component>`.
pub fn child_name(marketplace: &Marketplace, component: Component) -> String {
    format!("{}-{component}", marketplace.name_any())
}

/// The labels that select a component's pods: stable for the life of the
/// marketplace, so selectors never change.
pub fn selector_labels(
    marketplace: &Marketplace,
    component: Component,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        (
            "app.kubernetes.io/instance".to_owned(),
            marketplace.name_any(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            component.as_str().to_owned(),
        ),
    ])
}

/// Every label a child carries: the selector labels and `managed-by`, by
/// which children that are no longer wanted are found and deleted.
pub fn labels(marketplace: &Marketplace, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(marketplace, component);
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGER.to_owned(),
    );
    labels
}

/// The label selector of everything the operator made for one marketplace.
pub fn instance_selector(marketplace: &Marketplace) -> String {
    format!(
        "app.kubernetes.io/managed-by={MANAGER},app.kubernetes.io/instance={}",
        marketplace.name_any()
    )
}

/// The controller owner reference that ties a child's life to its
/// marketplace (garbage collection deletes it with the marketplace).
pub fn owner_reference(marketplace: &Marketplace) -> Option<OwnerReference> {
    marketplace.controller_owner_ref(&())
}

/// Metadata of a component's child: its name, the marketplace's namespace,
/// the labels and the owner reference.
pub fn child_meta(marketplace: &Marketplace, component: Component, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: marketplace.namespace(),
        labels: Some(labels(marketplace, component)),
        owner_references: owner_reference(marketplace).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::crd::{Marketplace, MarketplaceSpec};

    /// A marketplace as the API server returns it: named, namespaced, with
    /// a uid (owner references need one) and the spec's defaults.
    pub(crate) fn marketplace(spec: MarketplaceSpec) -> Marketplace {
        let mut marketplace = Marketplace::new("shop", spec);
        marketplace.metadata.namespace = Some("team-a".to_owned());
        marketplace.metadata.uid = Some("6f1c3a52-0000-4000-8000-000000000001".to_owned());
        marketplace.metadata.generation = Some(3);
        marketplace
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MAX_NAME_LENGTH, MarketplaceSpec};

    #[test]
    fn children_are_named_labelled_and_owned_by_their_marketplace() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());

        let meta = child_meta(
            &marketplace,
            Component::OrderDatabase,
            child_name(&marketplace, Component::OrderDatabase),
        );

        assert_eq!(meta.name.as_deref(), Some("shop-order-db"));
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
        let labels = meta.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "marketplace");
        assert_eq!(labels["app.kubernetes.io/instance"], "shop");
        assert_eq!(labels["app.kubernetes.io/component"], "order-db");
        assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGER);
        let owner = &meta.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "Marketplace");
        assert_eq!(owner.name, "shop");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(
            instance_selector(&marketplace),
            "app.kubernetes.io/managed-by=marketplace-operator,app.kubernetes.io/instance=shop"
        );
    }

    /// Every child of a Marketplace with the longest name the CRD accepts
    /// has a valid name and label values: names of at most 63 characters
    /// (Services are DNS labels), StatefulSets of at most 52 (their pods'
    /// `controller-revision-hash` label is the name, a dash and up to ten
    /// characters of hash).
    #[test]
    fn the_longest_accepted_name_gives_children_valid_names_and_labels() {
        let mut marketplace = fixtures::marketplace(MarketplaceSpec::default());
        marketplace.metadata.name = Some("m".repeat(MAX_NAME_LENGTH));

        let mut children: Vec<ObjectMeta> = Vec::new();
        let mut stateful_sets = Vec::new();
        for component in Component::ALL {
            children.extend(services::deployment(&marketplace, component).map(|o| o.metadata));
            children.extend(services::service(&marketplace, component).map(|o| o.metadata));
            children.extend(
                services::pod_disruption_budget(&marketplace, component).map(|o| o.metadata),
            );
            children
                .extend(stores::database_secret(&marketplace, component, "pw").map(|o| o.metadata));
            children.extend(stores::database_service(&marketplace, component).map(|o| o.metadata));
            stateful_sets.extend(stores::database_statefulset(&marketplace, component));
        }
        children.extend(stores::search_service(&marketplace).map(|o| o.metadata));
        children.extend(stores::search_headless_service(&marketplace).map(|o| o.metadata));
        stateful_sets.extend(stores::search_statefulset(&marketplace));
        children.extend(
            stores::network_policies(&marketplace)
                .into_iter()
                .map(|o| o.metadata),
        );
        children.extend(monitoring::scrape_config_map(&marketplace, false).map(|o| o.metadata));
        children.extend(monitoring::service_monitor(&marketplace, true).map(|o| o.metadata));
        assert_eq!(stateful_sets.len(), 3);
        for stateful_set in &stateful_sets {
            let name = stateful_set.metadata.name.clone().unwrap();
            assert!(name.len() <= 52, "StatefulSet {name} is too long");
        }
        children.extend(stateful_sets.into_iter().map(|o| o.metadata));

        assert!(children.len() > 20, "{} children", children.len());
        for meta in &children {
            let name = meta.name.clone().unwrap();
            assert!(name.len() <= 63, "{name} has {} characters", name.len());
            for (key, value) in meta.labels.iter().flatten() {
                assert!(value.len() <= 63, "{name}: label {key}={value} is too long");
            }
        }

        marketplace.metadata.name = Some("m".repeat(MAX_NAME_LENGTH + 1));
        let longest = stores::database_statefulset(&marketplace, Component::AccountDatabase)
            .unwrap()
            .metadata
            .name
            .unwrap();
        assert!(longest.len() > 52, "{MAX_NAME_LENGTH} is not the limit");
    }
}
