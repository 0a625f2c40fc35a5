//! The errors GraphQL clients see: a message a person can act on and an
//! `extensions.code` a program can branch on, never a backend's own text.

use async_graphql::{Error, ErrorExtensions, ServerError, Value};
use tonic::{Code, Status};

use crate::downstream::Service;
use crate::schema::Limits;

/// The `extensions.code` of every error the gateway returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is wrong: a malformed id, a blank name, a negative
    /// quantity, a limit exceeded. Sending it again will fail again.
    BadUserInput,
    /// What the request names does not exist.
    NotFound,
    /// A service behind the gateway is down or too slow; try again later.
    Unavailable,
    /// Anything else. The cause is in the gateway's log.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::NotFound => "NOT_FOUND",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    /// An error with this code and `message`.
    pub fn error(self, message: impl Into<String>) -> Error {
        Error::new(message).extend_with(|_, extensions| extensions.set("code", self.as_str()))
    }
}

/// A bad argument: `BAD_USER_INPUT` with `message`.
pub fn bad_input(message: impl Into<String>) -> Error {
    ErrorCode::BadUserInput.error(message)
}

/// Maps a downstream's status to the error the client sees.
///
/// The services write their INVALID_ARGUMENT, FAILED_PRECONDITION and
/// NOT_FOUND messages for people (they name the field or the missing ids
/// and never carry backend text), so those pass through. Everything else
/// is replaced by a fixed message; the status goes to the log.
pub fn from_status(service: Service, status: &Status) -> Error {
    match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists => {
            ErrorCode::BadUserInput.error(status.message())
        }
        Code::NotFound => ErrorCode::NotFound.error(status.message()),
        // A refused connection is UNAVAILABLE and the channel's deadline
        // CANCELLED ("Timeout expired"); an overloaded or lagging service
        // is RESOURCE_EXHAUSTED. All are worth retrying later.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            // `dependency` and `detail`, not `service` and `message`: those
            // are the log line's own keys.
            tracing::warn!(dependency = service.name(), grpc_code = ?status.code(), detail = status.message(), "a service behind the gateway is unavailable");
            ErrorCode::Unavailable.error(format!(
                "the {} service is unavailable; try again later",
                service.name()
            ))
        }
        _ => {
            tracing::error!(dependency = service.name(), grpc_code = ?status.code(), detail = status.message(), "a service behind the gateway failed");
            internal()
        }
    }
}

/// Gives every error of a response an `extensions.code`: errors without a
/// path are about the request itself (it does not parse, names an unknown
/// field, exceeds a limit) and so BAD_USER_INPUT; the resolvers set their
/// own codes, and one that did not is a defect, reported as INTERNAL. The
/// limits' own messages are replaced by ones that say what the limit is.
pub fn finish(errors: &mut [ServerError], limits: &Limits) {
    for error in errors {
        if error.message == "Query is nested too deep." {
            error.message = format!(
                "the query is nested too deep: at most {} levels of selections are allowed",
                limits.depth
            );
        } else if error.message == "Query is too complex." {
            error.message = format!(
                "the query is too complex: its estimated cost is over the limit of {}; \
                 ask for fewer items with take, or fewer nested lists",
                limits.complexity
            );
        }
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|extensions| extensions.get("code").is_some());
        if !has_code {
            let code = if error.path.is_empty() {
                ErrorCode::BadUserInput
            } else {
                tracing::error!(detail = %error.message, path = ?error.path, "an error without a code");
                error.message = "internal error; the cause is logged on the gateway".to_owned();
                ErrorCode::Internal
            };
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", Value::String(code.as_str().to_owned()));
        }
    }
}

/// `INTERNAL` with a message that reveals nothing; log the cause first.
pub fn internal() -> Error {
    ErrorCode::Internal.error("internal error; the cause is logged on the gateway")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(error: &Error) -> Option<String> {
        let extensions = error.extensions.as_ref()?;
        match extensions.get("code")? {
            Value::String(code) => Some(code.clone()),
            _ => None,
        }
    }

    #[test]
    fn each_grpc_code_maps_to_one_graphql_code() {
        let cases = [
            (Code::InvalidArgument, "BAD_USER_INPUT"),
            (Code::FailedPrecondition, "BAD_USER_INPUT"),
            // tonic's own "message too large", not a service's answer.
            (Code::OutOfRange, "INTERNAL"),
            (Code::NotFound, "NOT_FOUND"),
            (Code::Unavailable, "UNAVAILABLE"),
            (Code::DeadlineExceeded, "UNAVAILABLE"),
            (Code::Cancelled, "UNAVAILABLE"),
            (Code::ResourceExhausted, "UNAVAILABLE"),
            (Code::Internal, "INTERNAL"),
            (Code::Unknown, "INTERNAL"),
            (Code::Unimplemented, "INTERNAL"),
        ];
        for (grpc, graphql) in cases {
            let error = from_status(Service::Order, &Status::new(grpc, "detail"));
            assert_eq!(code(&error).as_deref(), Some(graphql), "{grpc:?}");
        }
    }

    #[test]
    fn only_messages_written_for_people_pass_through() {
        let refused = from_status(
            Service::Catalog,
            &Status::invalid_argument("name must not be blank"),
        );
        assert_eq!(refused.message, "name must not be blank");

        let failed = from_status(
            Service::Account,
            &Status::internal("relation \"accounts\" does not exist"),
        );
        assert!(!failed.message.contains("relation"), "{}", failed.message);

        let down = from_status(
            Service::Catalog,
            &Status::unavailable("tcp connect error: Connection refused"),
        );
        assert_eq!(
            down.message,
            "the catalog service is unavailable; try again later"
        );
    }
}
