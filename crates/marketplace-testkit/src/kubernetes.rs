//! A fresh namespace per test on the run's kwok cluster, deleted when the
//! fixture is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::Backend;

/// Label on every namespace a fixture creates, so a person can find strays.
pub const FIXTURE_LABEL: &str = "marketplace.test/fixture";

/// A namespace of this test's own.
pub struct TestNamespace {
    name: String,
    client: Client,
    kubeconfig: PathBuf,
}

/// A client for the run's cluster with its administrator credentials;
/// `None` when no cluster is configured.
pub async fn client() -> Option<(Client, PathBuf)> {
    let kubeconfig = PathBuf::from(Backend::Kubernetes.locate()?);
    let client = client_for(&kubeconfig).await;
    Some((client, kubeconfig))
}

async fn client_for(kubeconfig: &Path) -> Client {
    let file = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", kubeconfig.display()));
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("loading kubeconfig {}: {e}", kubeconfig.display()));
    Client::try_from(config).unwrap_or_else(|e| panic!("building a Kubernetes client: {e}"))
}

/// Creates a namespace and waits until pods can be created in it (its
/// default ServiceAccount exists); `None` when no cluster is configured.
pub async fn namespace() -> Option<TestNamespace> {
    let (client, kubeconfig) = client().await?;
    let name = crate::unique_name("test-");
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(FIXTURE_LABEL.to_owned(), "testkit".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &name);
    crate::eventually(
        "the default ServiceAccount of a new namespace",
        Duration::from_secs(60),
        || {
            let accounts = accounts.clone();
            async move { accounts.get_opt("default").await.ok().flatten() }
        },
    )
    .await;
    Some(TestNamespace {
        name,
        client,
        kubeconfig,
    })
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// An API for namespaced objects of kind `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// `kubectl` aimed at this cluster and namespace, as a user would run it.
    pub fn kubectl(&self) -> std::process::Command {
        let mut command = std::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--namespace")
            .arg(&self.name);
        command
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let (name, kubeconfig) = (self.name.clone(), self.kubeconfig.clone());
        crate::block_on_cleanup(format!("namespace {name}"), async move {
            let client = client_for(&kubeconfig).await;
            match Api::<Namespace>::all(client)
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        });
    }
}
