//! Where the gateway is reachable: `status.gatewayEndpoint`, the GATEWAY
//! column of `kubectl get mp`.
//!
//! The endpoint is the GraphQL URL a client would use, chosen by the
//! gateway Service's type:
//!
//! - `ClusterIP`: the in-cluster URL,
//!   `http://<marketplace>-gateway.<namespace>.svc:<port>/graphql`.
//! - `LoadBalancer`: `http://<address>:<port>/graphql`, the address being
//!   the first ingress IP (or, failing that, hostname) in the live
//!   Service's `status.loadBalancer`. Until the cloud assigns one, the
//!   in-cluster URL: the gateway is already reachable there, and the
//!   column changes to the external address once it exists, much as
//!   `kubectl get svc` shows `<pending>` until then.
//! - `NodePort`: the in-cluster URL. A node port is reached through some
//!   node's address, which a Service does not name (nodes come and go and
//!   may have several addresses), so no single external URL exists; the
//!   allocated node port is on the Service (`kubectl get svc`).
//!
//! The URL is plain `http`: the gateway serves no TLS of its own, and a
//! TLS-terminating load balancer in front of it is outside what the
//! Service says.

use k8s_openapi::api::core::v1::Service;

use super::services::service_host;
use super::{Component, child_name};
use crate::crd::{Marketplace, ServiceType};

/// The HTTP path of the gateway's GraphQL endpoint.
pub const GRAPHQL_PATH: &str = "/graphql";

/// The gateway's GraphQL URL as the module documentation describes it;
/// `None` when the gateway is disabled. `live` is the gateway's Service as
/// the API server last returned it, for a load balancer's address; `None`
/// before it exists.
pub fn gateway_endpoint(marketplace: &Marketplace, live: Option<&Service>) -> Option<String> {
    let gateway = &marketplace.spec.gateway;
    if !gateway.enabled {
        return None;
    }
    let port = gateway.service.port;
    let host = match gateway.service.type_ {
        ServiceType::LoadBalancer => live.and_then(load_balancer_address),
        ServiceType::ClusterIP | ServiceType::NodePort => None,
    }
    .unwrap_or_else(|| service_host(marketplace, &child_name(marketplace, Component::Gateway)));
    Some(format!("http://{host}:{port}{GRAPHQL_PATH}"))
}

/// The first ingress address of a load balancer Service, an IPv6 address
/// in brackets so that it can take a port.
fn load_balancer_address(service: &Service) -> Option<String> {
    let ingress = service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    let ip = ingress.ip.as_deref().filter(|ip| !ip.is_empty());
    let hostname = ingress.hostname.as_deref().filter(|name| !name.is_empty());
    match (ip, hostname) {
        (Some(ip), _) if ip.contains(':') => Some(format!("[{ip}]")),
        (Some(ip), _) => Some(ip.to_owned()),
        (None, Some(hostname)) => Some(hostname.to_owned()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };

    use super::*;
    use crate::builders::fixtures;
    use crate::crd::MarketplaceSpec;

    fn marketplace(type_: ServiceType, port: i32) -> Marketplace {
        let mut spec = MarketplaceSpec::default();
        spec.gateway.service.type_ = type_;
        spec.gateway.service.port = port;
        fixtures::marketplace(spec)
    }

    fn live(ingress: Vec<LoadBalancerIngress>) -> Service {
        Service {
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(ingress),
                }),
                ..ServiceStatus::default()
            }),
            ..Service::default()
        }
    }

    fn ip(ip: &str) -> LoadBalancerIngress {
        LoadBalancerIngress {
            ip: Some(ip.to_owned()),
            ..LoadBalancerIngress::default()
        }
    }

    fn hostname(hostname: &str) -> LoadBalancerIngress {
        LoadBalancerIngress {
            hostname: Some(hostname.to_owned()),
            ..LoadBalancerIngress::default()
        }
    }

    #[test]
    fn a_disabled_gateway_has_no_endpoint() {
        let mut marketplace = marketplace(ServiceType::LoadBalancer, 80);
        marketplace.spec.gateway.enabled = false;

        assert_eq!(gateway_endpoint(&marketplace, None), None);
        assert_eq!(
            gateway_endpoint(&marketplace, Some(&live(vec![ip("203.0.113.7")]))),
            None
        );
    }

    #[test]
    fn a_cluster_ip_gateway_is_reached_at_its_in_cluster_url() {
        let marketplace = marketplace(ServiceType::ClusterIP, 8080);

        assert_eq!(
            gateway_endpoint(&marketplace, None).as_deref(),
            Some("http://shop-gateway.team-a.svc:8080/graphql")
        );
    }

    #[test]
    fn a_cluster_ip_gateway_ignores_a_stale_load_balancer_status() {
        // The type was just changed away from LoadBalancer.
        let marketplace = marketplace(ServiceType::ClusterIP, 8080);

        assert_eq!(
            gateway_endpoint(&marketplace, Some(&live(vec![ip("203.0.113.7")]))).as_deref(),
            Some("http://shop-gateway.team-a.svc:8080/graphql")
        );
    }

    #[test]
    fn a_load_balancer_gateway_is_reached_at_its_first_ingress_address() {
        let marketplace = marketplace(ServiceType::LoadBalancer, 80);
        let cases = [
            (
                vec![ip("203.0.113.7"), ip("203.0.113.8")],
                "http://203.0.113.7:80/graphql",
            ),
            (
                vec![hostname("shop-1234.elb.example.com")],
                "http://shop-1234.elb.example.com:80/graphql",
            ),
            (vec![ip("2001:db8::7")], "http://[2001:db8::7]:80/graphql"),
            (
                vec![LoadBalancerIngress {
                    ip: Some("203.0.113.9".to_owned()),
                    hostname: Some("shop.example.com".to_owned()),
                    ..LoadBalancerIngress::default()
                }],
                "http://203.0.113.9:80/graphql",
            ),
        ];

        for (ingress, expected) in cases {
            assert_eq!(
                gateway_endpoint(&marketplace, Some(&live(ingress))).as_deref(),
                Some(expected)
            );
        }
    }

    #[test]
    fn a_load_balancer_gateway_is_reached_in_the_cluster_until_an_address_is_assigned() {
        let marketplace = marketplace(ServiceType::LoadBalancer, 80);
        let in_cluster = Some("http://shop-gateway.team-a.svc:80/graphql");

        assert_eq!(gateway_endpoint(&marketplace, None).as_deref(), in_cluster);
        assert_eq!(
            gateway_endpoint(&marketplace, Some(&Service::default())).as_deref(),
            in_cluster
        );
        assert_eq!(
            gateway_endpoint(&marketplace, Some(&live(Vec::new()))).as_deref(),
            in_cluster
        );
        assert_eq!(
            gateway_endpoint(&marketplace, Some(&live(vec![ip("")]))).as_deref(),
            in_cluster
        );
    }

    #[test]
    fn a_node_port_gateway_is_reported_at_its_in_cluster_url() {
        let marketplace = marketplace(ServiceType::NodePort, 8080);
        let with_node_port = Service {
            spec: Some(ServiceSpec {
                type_: Some("NodePort".to_owned()),
                ports: Some(vec![ServicePort {
                    port: 8080,
                    node_port: Some(31080),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };

        assert_eq!(
            gateway_endpoint(&marketplace, Some(&with_node_port)).as_deref(),
            Some("http://shop-gateway.team-a.svc:8080/graphql")
        );
    }
}
