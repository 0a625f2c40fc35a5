//! The gRPC contracts between the marketplace's services, generated at build
//! time from `proto/` (versioned packages `marketplace.<service>.v1`).
//!
//! Money is [`common::v1::Money`], an exact count of minor units; no field in
//! these contracts is a floating-point number (a test keeps it so).

// Generated code: its shape is prost's and tonic's, not ours.
#[allow(
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
mod generated {
    pub mod marketplace {
        pub mod common {
            pub mod v1 {
                tonic::include_proto!("marketplace.common.v1");
            }
        }
        pub mod account {
            pub mod v1 {
                tonic::include_proto!("marketplace.account.v1");
            }
        }
        pub mod catalog {
            pub mod v1 {
                tonic::include_proto!("marketplace.catalog.v1");
            }
        }
        pub mod order {
            pub mod v1 {
                tonic::include_proto!("marketplace.order.v1");
            }
        }
    }
}

pub use generated::marketplace::{account, catalog, common, order};

/// The encoded `FileDescriptorSet` of every marketplace proto, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/marketplace_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::field_descriptor_proto::Type;
    use prost_types::{DescriptorProto, FileDescriptorSet};

    use super::*;

    fn descriptors() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("the embedded descriptor set decodes")
    }

    fn methods_of(service: &str) -> Vec<String> {
        let set = descriptors();
        let (package, name) = service.rsplit_once('.').expect("qualified name");
        set.file
            .iter()
            .filter(|f| f.package() == package)
            .flat_map(|f| &f.service)
            .filter(|s| s.name() == name)
            .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
            .collect()
    }

    fn float_fields(prefix: &str, message: &DescriptorProto, found: &mut Vec<String>) {
        let name = format!("{prefix}.{}", message.name());
        for field in &message.field {
            if matches!(field.r#type(), Type::Double | Type::Float) {
                found.push(format!("{name}.{}", field.name()));
            }
        }
        for nested in &message.nested_type {
            float_fields(&name, nested, found);
        }
    }

    #[test]
    fn every_service_is_in_a_versioned_package_with_its_methods() {
        assert_eq!(
            methods_of("marketplace.account.v1.AccountService"),
            ["CreateAccount", "GetAccount", "GetAccounts", "ListAccounts"]
        );
        assert_eq!(
            methods_of("marketplace.catalog.v1.CatalogService"),
            [
                "CreateProduct",
                "GetProduct",
                "GetProducts",
                "ListProducts",
                "SearchProducts"
            ]
        );
        assert_eq!(
            methods_of("marketplace.order.v1.OrderService"),
            [
                "CreateOrder",
                "GetOrder",
                "ListOrdersForAccounts",
                "WatchAccountOrders"
            ]
        );
    }

    #[test]
    fn no_marketplace_field_is_a_floating_point_number() {
        let mut found = Vec::new();
        for file in descriptors()
            .file
            .iter()
            .filter(|f| f.package().starts_with("marketplace."))
        {
            for message in &file.message_type {
                float_fields(file.package(), message, &mut found);
            }
        }
        assert!(found.is_empty(), "floating-point fields: {found:?}");
    }

    #[test]
    fn an_order_round_trips_through_the_wire_format() {
        let order = order::v1::Order {
            id: "2a".into(),
            account_id: "1b".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_795_550_000,
                nanos: 5,
            }),
            total_price: Some(common::v1::Money { minor_units: 160 }),
            lines: vec![order::v1::OrderLine {
                product_id: "p".into(),
                quantity: 3,
                unit_price: Some(common::v1::Money { minor_units: 10 }),
            }],
        };

        let decoded = order::v1::Order::decode(order.encode_to_vec().as_slice()).unwrap();

        assert_eq!(decoded, order);
    }
}
