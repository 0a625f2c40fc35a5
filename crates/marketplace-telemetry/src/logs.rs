//! Log lines as JSON objects, one per line, for log collectors:
//! `timestamp`, `level`, `service`, `target`, `message`, the event's own
//! fields, `span` (the innermost span's name) and, while a request is
//! served, `request_id` and `trace_id`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::RequestContext;

/// The JSON line format of a process running `service`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonLines {
    pub(crate) service: &'static str,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let request = RequestContext::current();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::String(metadata.level().to_string()));
        let service = request.as_ref().map_or(self.service, |r| r.component);
        line.insert("service".into(), Value::String(service.to_owned()));
        line.insert("target".into(), Value::String(metadata.target().to_owned()));
        event.record(&mut Fields(&mut line));
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), Value::String(span.name().to_owned()));
        }
        if let Some(request) = request {
            line.insert(
                "request_id".into(),
                Value::String(request.request_id.to_string()),
            );
            if let Some(trace_id) = request.trace_id {
                line.insert("trace_id".into(), Value::String(trace_id.to_string()));
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields into the line's object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    fn lines(buffer: &Buffer) -> Vec<Value> {
        String::from_utf8(buffer.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_line_in_a_request_carries_the_service_and_the_request_and_trace_ids() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines {
                    service: "marketplace",
                })
                .with_writer(buffer.clone()),
        );
        let _default = tracing::subscriber::set_default(subscriber);
        let request = RequestContext {
            request_id: Arc::from("req-7"),
            trace_id: Some(Arc::from("0af7651916cd43dd8448eb211c80319c")),
            component: "order",
        };

        tracing::info!("starting");
        request
            .scope(async {
                let span = tracing::info_span!("grpc");
                let _entered = span.enter();
                tracing::warn!(attempt = 2, "catalog is slow");
            })
            .await;

        let lines = lines(&buffer);
        assert_eq!(lines[0]["service"], "marketplace");
        assert_eq!(lines[0]["message"], "starting");
        assert!(lines[0].get("request_id").is_none());
        assert_eq!(lines[1]["service"], "order");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["message"], "catalog is slow");
        assert_eq!(lines[1]["attempt"], 2);
        assert_eq!(lines[1]["span"], "grpc");
        assert_eq!(lines[1]["request_id"], "req-7");
        assert_eq!(lines[1]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    }
}
