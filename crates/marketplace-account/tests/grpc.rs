//! The account service over gRPC: the Application on 127.0.0.1:0 called
//! with the generated client. One test per behaviour and per bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use marketplace_config::SecretUrl;
use marketplace_domain::Id;
use marketplace_proto::account::v1::{
    Account, CreateAccountRequest, GetAccountRequest, GetAccountsRequest, ListAccountsRequest,
};
use marketplace_testkit::postgres;
use tonic::{Code, Status};

use crate::common::{Keep, Proxy, Running, server_addr, through};

/// Ids that are not KSUIDs: empty, too short, not base62, and of the right
/// shape but beyond a KSUID's range.
const MALFORMED_IDS: [(&str, &str); 4] = [
    ("empty", ""),
    ("too short", "0ujtsYcgvSTl8PAuAdqWYSMnLO"),
    ("not base62", "0ujtsYcgvSTl8PAuAdqWYSMnL-v"),
    ("out of range", "zzzzzzzzzzzzzzzzzzzzzzzzzzz"),
];

async fn create(app: &mut Running, name: &str) -> Account {
    app.client
        .create_account(CreateAccountRequest {
            name: name.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap()
}

async fn create_fails(name: &str) -> Status {
    let mut app = Running::sqlite().await;
    app.client
        .create_account(CreateAccountRequest {
            name: name.to_owned(),
        })
        .await
        .unwrap_err()
}

fn assert_invalid(status: &Status, mentions: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(mentions), "{status:?}");
}

// Behaviours, on both backends.

async fn created_accounts_can_be_fetched(mut app: Running) {
    let created = create(&mut app, "Ada Lovelace").await;

    let fetched = app
        .client
        .get_account(GetAccountRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();

    assert_eq!(created.name, "Ada Lovelace");
    assert!(Id::parse(&created.id).is_ok(), "{}", created.id);
    let created_at = created.created_at.unwrap();
    assert_eq!(created_at.nanos % 1000, 0, "whole microseconds");
    assert!(created_at.seconds > 1_700_000_000);
    assert_eq!(fetched, created);
}

async fn get_accounts_answers_known_ids_once(mut app: Running) {
    let first = create(&mut app, "first").await;
    let second = create(&mut app, "second").await;
    create(&mut app, "not asked for").await;

    let mut found = app
        .client
        .get_accounts(GetAccountsRequest {
            ids: vec![
                second.id.clone(),
                Id::generate().to_string(),
                first.id.clone(),
                second.id.clone(),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .accounts;

    found.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(found, vec![first, second]);
}

async fn list_accounts_pages_oldest_first(mut app: Running) {
    let mut created = Vec::new();
    for name in ["one", "two", "three"] {
        created.push(create(&mut app, name).await);
    }
    let list = |skip, take| ListAccountsRequest { skip, take };

    let first = app.client.list_accounts(list(0, 2)).await.unwrap();
    let rest = app.client.list_accounts(list(2, 0)).await.unwrap();
    let all = app.client.list_accounts(list(0, 5000)).await.unwrap();

    assert_eq!(first.into_inner().accounts, created[..2]);
    assert_eq!(rest.into_inner().accounts, created[2..]);
    assert_eq!(all.into_inner().accounts, created);
}

macro_rules! on_both_backends {
    ($($behaviour:ident),* $(,)?) => {
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(app) = crate::common::Running::postgres().await else { return };
                    super::$behaviour(app).await;
                }
            )*
        }
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(crate::common::Running::sqlite().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    created_accounts_can_be_fetched,
    get_accounts_answers_known_ids_once,
    list_accounts_pages_oldest_first,
);

#[tokio::test]
async fn a_name_of_exactly_200_characters_is_accepted() {
    let mut app = Running::sqlite().await;
    let name = "é".repeat(200);

    let created = create(&mut app, &name).await;

    assert_eq!(created.name, name);
}

#[tokio::test]
async fn names_are_kept_verbatim_including_sql_and_surrounding_spaces() {
    let Some(mut app) = Running::postgres().await else {
        return;
    };
    for name in ["'; DROP TABLE accounts; --", "  Zoë \u{1F680}  "] {
        let created = create(&mut app, name).await;

        assert_eq!(created.name, name);
    }
    let listed = app
        .client
        .list_accounts(ListAccountsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.into_inner().accounts.len(), 2);
}

#[tokio::test]
async fn get_accounts_with_no_ids_answers_nothing() {
    let mut app = Running::sqlite().await;
    create(&mut app, "someone").await;

    let found = app
        .client
        .get_accounts(GetAccountsRequest { ids: vec![] })
        .await
        .unwrap();

    assert_eq!(found.into_inner().accounts, vec![]);
}

#[tokio::test]
async fn get_accounts_accepts_exactly_1000_ids() {
    let mut app = Running::sqlite().await;
    let known = create(&mut app, "known").await;
    let mut ids: Vec<String> = (0..999).map(|_| Id::generate().to_string()).collect();
    ids.push(known.id.clone());

    let found = app
        .client
        .get_accounts(GetAccountsRequest { ids })
        .await
        .unwrap();

    assert_eq!(found.into_inner().accounts, vec![known]);
}

// Bad input.

#[tokio::test]
async fn an_empty_name_is_invalid_argument() {
    let status = create_fails("").await;

    assert_invalid(&status, "name must not be empty or only whitespace");
}

#[tokio::test]
async fn a_whitespace_only_name_is_invalid_argument() {
    let status = create_fails(" \t\u{3000} ").await;

    assert_invalid(&status, "name must not be empty or only whitespace");
}

#[tokio::test]
async fn a_201_character_name_is_invalid_argument() {
    let status = create_fails(&"a".repeat(201)).await;

    assert_invalid(&status, "name is longer than 200 characters");
}

#[tokio::test]
async fn a_name_with_a_control_character_is_invalid_argument() {
    let status = create_fails("Ada\u{7}Lovelace").await;

    assert_invalid(&status, "name contains a control character");
}

#[tokio::test]
async fn a_malformed_id_in_get_account_is_invalid_argument() {
    let mut app = Running::sqlite().await;
    for (what, id) in MALFORMED_IDS {
        let status = app
            .client
            .get_account(GetAccountRequest { id: id.to_owned() })
            .await
            .unwrap_err();

        assert_invalid(&status, &format!("id: {id:?} is not a valid id"));
        assert!(status.message().contains("KSUID"), "{what}: {status:?}");
    }
}

#[tokio::test]
async fn a_malformed_id_in_get_accounts_is_invalid_argument_naming_it() {
    let mut app = Running::sqlite().await;
    let known = create(&mut app, "known").await;
    for (what, id) in MALFORMED_IDS {
        let status = app
            .client
            .get_accounts(GetAccountsRequest {
                ids: vec![known.id.clone(), id.to_owned()],
            })
            .await
            .unwrap_err();

        assert_invalid(&status, &format!("ids[1]: {id:?} is not a valid id"));
        assert!(status.message().contains("KSUID"), "{what}: {status:?}");
    }
}

#[tokio::test]
async fn more_than_1000_ids_is_invalid_argument() {
    let mut app = Running::sqlite().await;
    let ids = (0..1001).map(|_| Id::generate().to_string()).collect();

    let status = app
        .client
        .get_accounts(GetAccountsRequest { ids })
        .await
        .unwrap_err();

    assert_invalid(&status, "at most 1000 ids per call, got 1001");
}

#[tokio::test]
async fn an_unknown_id_is_not_found_naming_the_id() {
    let mut app = Running::sqlite().await;
    let unknown = Id::generate().to_string();

    let status = app
        .client
        .get_account(GetAccountRequest {
            id: unknown.clone(),
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), format!("no account has the id {unknown}"));
}

// Operations.

#[tokio::test]
async fn a_database_that_goes_down_is_unavailable_without_backend_details() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let proxy = Proxy::start(server_addr(db.url()).await).await;
    let url = through(db.url(), proxy.addr);
    let mut app = Running::start(SecretUrl::new(url), Keep::Postgres(db)).await;
    let account = create(&mut app, "before the outage").await;

    proxy.stop().await;
    let status = app
        .client
        .get_account(GetAccountRequest { id: account.id })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "the account database is unavailable; try again later"
    );
}

#[tokio::test]
async fn health_check_reports_the_account_service_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let app = Running::sqlite().await;
    let mut health = HealthClient::new(app.channel().await);

    let response = health
        .check(HealthCheckRequest {
            service: "marketplace.account.v1.AccountService".to_owned(),
        })
        .await
        .unwrap();

    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test]
async fn reflection_lists_the_account_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let app = Running::sqlite().await;
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };

    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();

    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names
            .iter()
            .any(|n| n == "marketplace.account.v1.AccountService"),
        "{names:?}"
    );
}
