//! The OpenAPI 3 document served at `/openapi.json`, written by hand.
//!
//! A test checks that its paths and methods are exactly those of [`crate::ROUTES`].
//! It owns the description of the HTTP API; it must never describe a route
//! that [`crate::ROUTES`] does not list.

use serde_json::{Value, json};

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_content(schema) })
}

fn error(description: &str) -> Value {
    json!({ "description": description, "content": json_content(reference("Error")) })
}

fn body(schema: Value) -> Value {
    json!({ "required": true, "content": json_content(schema) })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn stream_param() -> Value {
    path_param("stream", "Stream name (percent-encoded; at most 1024 bytes).")
}

fn group_param() -> Value {
    path_param("name", "Group name: 1-200 letters, digits or -_.:")
}

fn events_list() -> Value {
    json!({ "type": "object", "required": ["events"], "properties": { "events": { "type": "array", "items": reference("Event") } } })
}

/// A page of a read: the events, and where to continue if the page was cut by size.
fn events_page() -> Value {
    json!({ "type": "object", "required": ["events"], "properties": {
        "events": { "type": "array", "items": reference("Event") },
        "truncated": { "type": "boolean", "description": "Present (true) when the page stopped short of `limit` because the response reached the server's max_response_bytes (16 MiB by default); a page always holds at least one event." },
        "next_from": { "type": "integer", "description": "Present when more may follow (the page is full, or truncated): the `from` of the next page (the revision or position after the last event, in the read's direction)." }
    } })
}

fn read_params() -> Vec<Value> {
    vec![
        query(
            "direction",
            "forward (default) or backward.",
            json!({ "type": "string", "enum": ["forward", "backward"] }),
        ),
        query(
            "limit",
            "Most events returned (default 100, at most 10,000).",
            json!({ "type": "integer", "minimum": 1 }),
        ),
    ]
}

fn filter_params() -> Vec<Value> {
    vec![
        query(
            "type",
            "Event type; repeat for any of several.",
            json!({ "type": "array", "items": { "type": "string" } }),
        ),
        query(
            "tag",
            "Required tag; repeat to require all of several.",
            json!({ "type": "array", "items": { "type": "string" } }),
        ),
        query("stream_prefix", "Stream name prefix.", json!({ "type": "string" })),
        query(
            "since",
            "Recorded at or after this RFC 3339 time.",
            json!({ "type": "string", "format": "date-time" }),
        ),
        query(
            "until",
            "Recorded before this RFC 3339 time.",
            json!({ "type": "string", "format": "date-time" }),
        ),
        query(
            "type_pattern",
            "Topic pattern on the event type (RabbitMQ rules: words between dots, * one word, # zero or more); repeat for any of several.",
            json!({ "type": "array", "items": { "type": "string" } }),
        ),
        query(
            "stream_pattern",
            "Topic pattern on the stream name; repeat for any of several.",
            json!({ "type": "array", "items": { "type": "string" } }),
        ),
        query(
            "aggregate_type",
            "Streams named <aggregate_type>-<id> (split at the first -).",
            json!({ "type": "string" }),
        ),
        query(
            "aggregate_id",
            "Streams named <type>-<aggregate_id> (split at the first -).",
            json!({ "type": "string" }),
        ),
        query(
            "metadata.{key}",
            "The event metadata's top-level key holds this string (AND-ed over keys). An index lookup for a key in the store's indexed_metadata option; otherwise the read checks each candidate event, bounded by the request timeout.",
            json!({ "type": "string" }),
        ),
    ]
}

fn sse(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "text/event-stream": { "schema": { "type": "string" } } }
    })
}

fn schemas() -> Value {
    json!({
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": { "type": "string", "description": "Machine-readable code, such as wrong_expected_version, condition_failed, idempotency_conflict, stream_not_found, stream_deleted, event_not_found, invalid_json, invalid_request, invalid_input, invalid_expected_version, too_many_events, payload_too_large, unauthorized, forbidden, not_ready, too_many_subscribers, too_many_long_polls, too_many_scans, group_name_outside_prefixes, timeout (a read took longer than request_timeout_ms), outcome_unknown (a request that changes something took longer than request_timeout_ms after reaching the store: it may have been applied, or may still be; retrying an append with the same event ids is safe)." },
                "message": { "type": "string" },
                "expected": { "description": "wrong_expected_version: what the request expected." },
                "actual": { "type": ["integer", "null"], "description": "wrong_expected_version: the stream's last revision, null if it does not exist." },
                "position": { "type": "integer", "description": "condition_failed: the first matching event." },
                "id": { "type": "string", "format": "uuid", "description": "idempotency_conflict: the request's event id that is already stored elsewhere (where is not said)." }
            }
        },
        "ExpectedVersion": {
            "description": "\"any\", \"no-stream\", \"exists\", or the stream's last revision.",
            "oneOf": [ { "type": "string", "enum": ["any", "no-stream", "exists"] }, { "type": "integer", "minimum": 0 }, { "type": "string", "pattern": "^[0-9]+$" } ]
        },
        "NewEvent": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": false,
            "properties": {
                "type": { "type": "string" },
                "data": { "description": "Any JSON value (stored as JSON), nested at most 64 levels deep." },
                "data_base64": { "type": "string", "description": "Binary data instead of data." },
                "metadata": { "description": "Any JSON value, nested at most 64 levels deep." },
                "metadata_base64": { "type": "string" },
                "id": { "type": "string", "format": "uuid", "description": "For idempotent retries; generated when absent." },
                "tags": { "type": "array", "items": { "type": "string" } },
                "subject": { "type": "string", "description": "The subject whose personal data the event carries: data and metadata are stored encrypted under its key, which DELETE /subjects/{subject} destroys; the event is not indexed or filtered by metadata fields." },
                "erased": { "type": "boolean", "description": "True for an event that arrives already erased (its subject was shredded where it was first recorded; what a forwarder sends): it carries no data, metadata or subject (data_base64 \"\" keeps it binary), is stored erased and reads back with \"erased\": true; a retry with the same id, type and tags is idempotent." }
            }
        },
        "Event": {
            "type": "object",
            "required": ["stream", "revision", "position", "id", "type", "timestamp", "tags"],
            "properties": {
                "stream": { "type": "string" },
                "revision": { "type": "integer" },
                "position": { "type": "integer" },
                "id": { "type": "string", "format": "uuid" },
                "type": { "type": "string" },
                "timestamp": { "type": "string", "format": "date-time", "description": "RFC 3339 UTC with microseconds." },
                "data": { "description": "The data as JSON, when it is JSON; null when empty." },
                "data_base64": { "type": "string", "description": "The data, when it is not JSON (or JSON nested more than 64 levels deep)." },
                "metadata": { "description": "The metadata as JSON; null when empty." },
                "metadata_base64": { "type": "string" },
                "tags": { "type": "array", "items": { "type": "string" } },
                "subject": { "type": "string", "description": "The subject the event names, while its key exists." },
                "erased": { "type": "boolean", "description": "Present (true) when the event's subject was shredded: data and metadata are gone (null), not empty." },
                "retry_count": { "type": "integer", "description": "Group deliveries only: earlier deliveries of this event." }
            }
        },
        "AppendResult": {
            "type": "object",
            "properties": {
                "first_revision": { "type": "integer" },
                "next_expected_version": { "type": "integer" },
                "position": { "type": "integer" }
            }
        },
        "QueryItem": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "types": { "type": "array", "items": { "type": "string" } },
                "tags": { "type": "array", "items": { "type": "string" } },
                "type_patterns": { "type": "array", "items": { "type": "string" }, "description": "Topic patterns on the event type (any of them)." },
                "metadata": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Top-level metadata keys and the string each must hold (all of them; index lookups for keys in the store's indexed_metadata option)." }
            }
        },
        "StreamMetadata": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "max_age_ms": { "type": "integer" },
                "max_count": { "type": "integer" },
                "truncate_before": { "type": "integer" },
                "custom": { "type": "object" }
            }
        },
        "GroupSettings": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "stream": { "type": "string", "description": "Read one stream; otherwise the filtered global log." },
                "types": { "type": "array", "items": { "type": "string" } },
                "tags": { "type": "array", "items": { "type": "string" } },
                "stream_prefix": { "type": "string" },
                "start": { "description": "\"start\" (default), \"end\", or a position (inclusive).", "oneOf": [ { "type": "string", "enum": ["start", "end"] }, { "type": "integer" } ] },
                "strategy": { "type": "string", "enum": ["round_robin", "pinned", "dispatch_to_single"] },
                "ack_timeout_ms": { "type": "integer" },
                "max_retries": { "type": "integer" },
                "max_in_flight": { "type": "integer", "maximum": 100000 },
                "checkpoint_every": { "type": "integer" }
            }
        },
        "Group": {
            "type": "object",
            "description": "A group's settings (as GroupSettings, plus name); GET /groups/{name} adds checkpoint, saved_checkpoint, in_flight, ready, parked, skipped_damaged and consumers.",
            "properties": {
                "name": { "type": "string" },
                "checkpoint": { "type": "integer" },
                "saved_checkpoint": { "type": "integer" },
                "in_flight": { "type": "integer" },
                "ready": { "type": "integer" },
                "parked": { "type": "integer" },
                "skipped_damaged": { "type": "integer" },
                "consumers": { "type": "array", "items": { "type": "string" } }
            }
        }
    })
}

/// The whole document.
pub fn document() -> Value {
    let stream_from = query(
        "from",
        "start (default), end, or a revision (inclusive).",
        json!({ "type": "string" }),
    );
    let log_from = query(
        "from",
        "start (default), end, or a position (inclusive).",
        json!({ "type": "string" }),
    );
    let mut stream_read_params = vec![stream_param(), stream_from.clone()];
    stream_read_params.extend(read_params());
    let mut all_params = vec![log_from.clone()];
    all_params.extend(read_params());
    all_params.extend(filter_params());
    let mut count_params = filter_params();
    count_params.push(query(
        "group_by",
        "Break the count down by type, stream, category or day (UTC, YYYY-MM-DD).",
        json!({ "type": "string", "enum": ["type", "stream", "category", "day"] }),
    ));
    let mut sub_all_params = vec![log_from];
    sub_all_params.extend(filter_params());
    sub_all_params.push(query(
        "skip_damaged",
        "At a position whose bytes are damaged: false (default) sends an error event naming it and ends; true sends a `damaged` event (position, next, reason) and goes on after it.",
        json!({ "type": "boolean" }),
    ));
    let admin_ok = |d: &str| ok(d, json!({ "type": "object" }));
    let no_content = |d: &str| json!({ "description": d });
    let health = json!({
        "get": { "summary": "Health: readiness, each forwarder's state and the disk budget. status is ok, or degraded (still 200: the store serves) when a forwarder is in error or undelivered events take 80 % or more of retention.max_bytes; problem_kinds says which kinds of problems, and, for a store-wide token only, problems says what (with the head position, forwarders and retention figures).", "security": [], "responses": { "200": ok("Ok or degraded.", json!({ "type": "object", "properties": { "status": { "type": "string", "enum": ["ok", "degraded"] }, "problem_kinds": { "type": "array", "items": { "type": "string" } }, "problems": { "type": "array", "items": { "type": "string" } }, "forwarders": { "type": "array", "items": { "type": "object" } } } })), "503": error("Not ready (not_ready), as /health/ready.") } }
    });
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "annal",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "HTTP/JSON API of the annal event store. Every route except /health, /health/* and /openapi.json needs `Authorization: Bearer <token>` unless the server runs in open mode; errors are {\"error\": code, \"message\": text}."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas()
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/health/live": {
                "get": { "summary": "Liveness: 200 while the server runs.", "security": [], "responses": { "200": ok("Live.", json!({ "type": "object" })) } }
            },
            "/health/ready": {
                "get": { "summary": "Readiness: 200 when the store answers a read and accepts appends.", "security": [], "responses": { "200": ok("Ready.", json!({ "type": "object" })), "503": error("Not ready (not_ready): shutting down, the store fails reads, or its writer stopped after an error (the message says why; the store's error only to a store-wide token).") } }
            },
            "/metrics": {
                "get": { "summary": "Prometheus metrics (public if the server is configured so).", "responses": { "200": { "description": "Prometheus text format.", "content": { "text/plain": { "schema": { "type": "string" } } } } } }
            },
            "/openapi.json": {
                "get": { "summary": "This document.", "security": [], "responses": { "200": ok("The OpenAPI document.", json!({ "type": "object" })) } }
            },
            "/streams": {
                "get": {
                    "summary": "List streams by name, a page at a time (system streams only with include_system=true). Changed: without limit it used to list every stream; it lists 1,000 and says truncated when more follow. A page passes over at most 16 names per stream of limit (4,096 at least), only under prefix (or <category>-) and the token's prefixes: it may hold fewer streams than limit, even none, with a next to go on from.",
                    "parameters": [
                        query("prefix", "Only streams starting with this.", json!({ "type": "string" })),
                        query("include_system", "Include $-prefixed system streams.", json!({ "type": "boolean" })),
                        query("category", "Only the aggregates of this type: streams named <category>-<id> (split at the first -).", json!({ "type": "string" })),
                        query("after", "Only streams whose names sort after this (the next of the previous page).", json!({ "type": "string" })),
                        query("limit", "Most streams in the answer (1 to 10,000; default 1,000).", json!({ "type": "integer", "minimum": 1, "maximum": 10000 }))
                    ],
                    "responses": { "200": ok("The streams; next and truncated (true), present when more may follow: next is the after of the next page.", json!({ "type": "object", "properties": { "streams": { "type": "array", "items": { "type": "object", "properties": { "stream": { "type": "string" }, "last_revision": { "type": "integer" }, "last_position": { "type": "integer" } } } }, "next": { "type": "string" }, "truncated": { "type": "boolean" } } })) }
                }
            },
            "/streams/{stream}": {
                "get": {
                    "summary": "Read a stream.",
                    "parameters": stream_read_params,
                    "responses": { "200": ok("Events.", events_page()), "404": error("No such stream."), "410": error("The stream is deleted."), "503": error("timeout.") }
                },
                "post": {
                    "summary": "Append events to a stream atomically.",
                    "parameters": [stream_param()],
                    "requestBody": body(json!({ "type": "object", "required": ["events"], "additionalProperties": false, "properties": { "expected": reference("ExpectedVersion"), "events": { "type": "array", "items": reference("NewEvent") } } })),
                    "responses": { "200": ok("Appended.", reference("AppendResult")), "400": error("Bad request (invalid_input also for a $-prefixed stream name: system streams are the store's)."), "409": error("Wrong expected version or idempotency conflict."), "410": error("The stream is deleted (hard)."), "503": error("outcome_unknown: the append may have been applied, or may still be; retry with the same event ids.") }
                },
                "delete": {
                    "summary": "Delete a stream (soft, or hard with hard=true).",
                    "parameters": [stream_param(), query("expected", "Expected version.", json!({ "type": "string" })), query("hard", "Hard delete: the name is gone for good.", json!({ "type": "boolean" }))],
                    "responses": { "204": no_content("Deleted."), "404": error("No such stream."), "409": error("Wrong expected version."), "410": error("Already hard-deleted.") }
                }
            },
            "/streams/{stream}/metadata": {
                "get": { "summary": "A stream's metadata; its ETag is the revision of the record that set it (\"no-stream\" when none was written).", "parameters": [stream_param()], "responses": { "200": ok("Metadata.", reference("StreamMetadata")), "404": error("No such stream.") } },
                "put": { "summary": "Replace a stream's metadata; with expected (the ETag read, unquoted) only if nobody wrote it since.", "parameters": [stream_param(), query("expected", "Expected version of the metadata: a revision, no-stream, exists or any (the default).", json!({ "type": "string" }))], "requestBody": body(reference("StreamMetadata")), "responses": { "200": ok("Stored; the ETag is its new version.", reference("StreamMetadata")), "400": error("Bad request."), "409": error("The metadata changed since the expected version.") } }
            },
            "/streams/{stream}/snapshot": {
                "get": { "summary": "The latest snapshot.", "parameters": [stream_param()], "responses": { "200": ok("Snapshot.", json!({ "type": "object", "properties": { "revision": { "type": "integer" }, "data": {}, "data_base64": { "type": "string" } } })), "404": error("No snapshot.") } },
                "post": { "summary": "Save a snapshot taken at a revision (data nested at most 64 levels deep; not of a $-prefixed stream).", "parameters": [stream_param()], "requestBody": body(json!({ "type": "object", "required": ["revision"], "additionalProperties": false, "properties": { "revision": { "type": "integer" }, "data": {}, "data_base64": { "type": "string" } } })), "responses": { "200": ok("Saved.", json!({ "type": "object" })), "404": error("No such stream.") } }
            },
            "/append": {
                "post": {
                    "summary": "Consistency-boundary append: fails if an event matching the query exists after a position.",
                    "requestBody": body(json!({ "type": "object", "required": ["stream", "events"], "additionalProperties": false, "properties": {
                        "stream": { "type": "string" },
                        "expected": reference("ExpectedVersion"),
                        "events": { "type": "array", "items": reference("NewEvent") },
                        "condition": { "type": "object", "required": ["query"], "properties": {
                            "query": { "type": "object", "description": "Either types and tags (one item) or items.", "properties": { "types": { "type": "array", "items": { "type": "string" } }, "tags": { "type": "array", "items": { "type": "string" } }, "items": { "type": "array", "items": reference("QueryItem") } } },
                            "after": { "type": "integer" }
                        } }
                    } })),
                    "responses": { "200": ok("Appended.", reference("AppendResult")), "400": error("Bad request."), "403": error("A condition from a token limited to some streams (a condition's query runs over every stream)."), "409": error("Condition failed, wrong expected version or idempotency conflict."), "503": error("outcome_unknown: the append may have been applied, or may still be; retry with the same event ids.") }
                }
            },
            "/all": {
                "get": { "summary": "Read the global log, optionally filtered.", "parameters": all_params, "responses": { "200": ok("Events.", events_page()), "403": error("The token is limited to some streams and gave no stream_prefix within them."), "503": error("timeout; too_many_scans (a read filtered on a metadata field the store does not index, while max_scans counts and such reads run).") } }
            },
            "/count": {
                "get": { "summary": "Count the events of the global log that pass the filter; with group_by, also a breakdown.", "parameters": count_params, "responses": { "200": ok("The count.", json!({ "type": "object", "required": ["count"], "properties": { "count": { "type": "integer" }, "groups": { "type": "object", "additionalProperties": { "type": "integer" } } } })), "403": error("The token is limited to some streams and gave no stream_prefix within them."), "503": error("timeout; too_many_scans (a count that reads the events, while max_scans such counts and scanning reads run; counts the indexes answer take no place).") } }
            },
            "/events/{id}": {
                "get": { "summary": "One event by id.", "parameters": [path_param("id", "Event id (UUID).")], "responses": { "200": ok("The event.", reference("Event")), "404": error("Unknown id, or an event in a stream the token may not read (answered alike).") } }
            },
            "/subscribe/all": {
                "get": {
                    "summary": "Subscribe to the global log (SSE): history, then live. Events have id = position; filtered subscriptions also send checkpoint events (id = last position considered), except to a token limited to some streams. Resume with Last-Event-ID.",
                    "parameters": sub_all_params,
                    "responses": { "200": sse("An event stream."), "400": error("Bad query, or a Last-Event-ID that is not an ASCII number."), "503": error("too_many_subscribers.") }
                }
            },
            "/subscribe/streams/{stream}": {
                "get": {
                    "summary": "Subscribe to one stream (SSE): events have id = revision; resume with Last-Event-ID.",
                    "parameters": [stream_param(), stream_from],
                    "responses": { "200": sse("An event stream."), "400": error("Bad query, or a Last-Event-ID that is not an ASCII number."), "503": error("too_many_subscribers.") }
                }
            },
            "/groups": {
                "get": { "summary": "List persistent subscription groups.", "responses": { "200": ok("Groups.", json!({ "type": "object", "properties": { "groups": { "type": "array", "items": reference("Group") } } })) } }
            },
            "/groups/{name}": {
                "get": { "summary": "A group's settings and state.", "parameters": [group_param()], "responses": { "200": ok("The group.", reference("Group")), "404": error("No such group.") } },
                "put": { "summary": "Create a group.", "parameters": [group_param()], "requestBody": body(reference("GroupSettings")), "responses": { "201": ok("Created.", reference("Group")), "403": error("forbidden; group_name_outside_prefixes (a token limited to some stream prefixes names its groups under them: group names are shared by the whole store)."), "409": error("The group exists.") } },
                "delete": { "summary": "Delete a group.", "parameters": [group_param()], "responses": { "204": no_content("Deleted."), "404": error("No such group.") } }
            },
            "/groups/{name}/fetch": {
                "post": {
                    "summary": "Fetch events for a consumer (long poll up to timeout_ms); stops adding events once the response reaches max_response_bytes.",
                    "parameters": [group_param(), query("consumer", "Consumer name (required).", json!({ "type": "string" })), query("max", "Most events (default 10).", json!({ "type": "integer" })), query("timeout_ms", "Wait this long for the first event (default 0).", json!({ "type": "integer" }))],
                    "responses": { "200": ok("Deliveries.", events_list()), "404": error("No such group, or one over streams the token may not read (answered alike)."), "503": error("too_many_long_polls (timeout_ms > 0 while max_long_polls fetches wait).") }
                }
            },
            "/groups/{name}/ack": {
                "post": { "summary": "Acknowledge events.", "parameters": [group_param()], "requestBody": body(json!({ "type": "object", "required": ["consumer", "ids"], "properties": { "consumer": { "type": "string" }, "ids": { "type": "array", "items": { "type": "string", "format": "uuid" } } } })), "responses": { "204": no_content("Acknowledged.") } }
            },
            "/groups/{name}/nack": {
                "post": { "summary": "Negatively acknowledge an event.", "parameters": [group_param()], "requestBody": body(json!({ "type": "object", "required": ["consumer", "id"], "properties": { "consumer": { "type": "string" }, "id": { "type": "string", "format": "uuid" }, "action": { "type": "string", "enum": ["retry", "park", "skip"] }, "reason": { "type": "string" } } })), "responses": { "204": no_content("Done.") } }
            },
            "/groups/{name}/replay-parked": {
                "post": { "summary": "Put parked events back in line.", "parameters": [group_param()], "responses": { "200": ok("How many.", json!({ "type": "object", "properties": { "replayed": { "type": "integer" } } })) } }
            },
            "/forward": {
                "get": { "summary": "The forwarders running beside the server ([[forward]] in annal.toml): state, target, checkpoint, lag in events, bytes and seconds, last error, delivered counts.", "responses": { "200": ok("The forwarders.", json!({ "type": "object", "properties": { "forwarders": { "type": "array", "items": { "type": "object" } } } })) } }
            },
            "/admin/scavenge": {
                "post": { "summary": "Run a scavenge now (admin).", "responses": { "200": admin_ok("Scavenge report.") } }
            },
            "/subjects/{subject}": {
                "delete": { "summary": "Shred a subject (admin): destroy its key durably, so that its events read back erased, in every stream.", "parameters": [path_param("subject", "The subject, as events named it.")], "responses": { "200": admin_ok("{\"subject\": …, \"shredded\": true}, or false when the subject had no key.") } }
            },
            "/admin/compress": {
                "post": { "summary": "Compress sealed segments now (admin).", "responses": { "200": admin_ok("Compression report.") } }
            },
            "/admin/backup": {
                "post": { "summary": "Back up the live store into an empty or new directory on the server, outside the data directory (admin).", "requestBody": body(json!({ "type": "object", "required": ["dir"], "properties": { "dir": { "type": "string", "description": "An absolute path, not inside the data directory (after resolving symbolic links and ..)." } } })), "responses": { "200": admin_ok("Backup report."), "400": error("A relative path, a path inside the data directory, or a directory that is not empty.") } }
            }
        }
    });
    // Beside the literal: one more path in it passes the macro's recursion limit.
    doc["paths"]["/health"] = health;
    for (path, item) in browse_paths() {
        doc["paths"][path] = item;
    }
    doc
}

/// The routes for browsing a large store page by page (`http::browse`),
/// which the web console uses.
fn browse_paths() -> Vec<(&'static str, Value)> {
    let obj = json!({ "type": "object" });
    let str_q = |n: &str, d: &str| query(n, d, json!({ "type": "string" }));
    let matching = || {
        vec![
            str_q("search", "Keep names containing this text (ASCII case-insensitive)."),
            str_q("prefix", "Keep names starting with this."),
            query(
                "include_system",
                "Also `$` streams (default false).",
                json!({ "type": "boolean" }),
            ),
        ]
    };
    let mut page_params = matching();
    page_params.push(str_q(
        "category",
        "Keep names whose category (the name up to the first `-`) is this.",
    ));
    page_params.push(str_q(
        "after",
        "Start after this name (the `next` of the previous page).",
    ));
    page_params.push(query(
        "limit",
        "Most streams (default 50, at most 1000).",
        json!({ "type": "integer", "minimum": 1 }),
    ));
    let stream_row = json!({ "type": "object", "properties": {
        "stream": { "type": "string" },
        "category": { "type": "string" },
        "last_revision": { "type": "integer" },
        "last_position": { "type": "integer" },
        "event_count": { "type": "integer", "description": "Events written and not truncated away (max_count and max_age may hide more on read)." },
        "last_write": { "type": ["string", "null"], "format": "date-time", "description": "Time of the last readable event." },
        "deleted": { "type": ["string", "null"], "enum": ["soft", "hard", null] },
        "metadata": { "type": ["object", "null"] }
    } });
    vec![
        (
            "/browse/streams",
            json!({ "get": {
            "summary": "One page of streams by name, with last write time, event count, metadata and delete state; only streams the token may read. Takes one of the max_scans places (503 too_many_scans when none is free).",
            "parameters": page_params,
            "responses": { "200": ok("A page.", json!({ "type": "object", "properties": {
                "streams": { "type": "array", "items": stream_row },
                "matched": { "type": "integer", "description": "Streams matching in all." },
                "next": { "type": ["string", "null"], "description": "The `after` of the next page; null on the last." }
            } })) }
        } }),
        ),
        (
            "/browse/categories",
            json!({ "get": {
            "summary": "Categories (names up to the first `-`) of the streams the token may read, with their stream counts, most streams first (at most 200). Takes one of the max_scans places (503 too_many_scans when none is free).",
            "parameters": matching(),
            "responses": { "200": ok("Categories.", json!({ "type": "object", "properties": {
                "categories": { "type": "array", "items": { "type": "object", "properties": { "category": { "type": "string" }, "streams": { "type": "integer" } } } },
                "total": { "type": "integer" }
            } })) }
        } }),
        ),
        (
            "/whoami",
            json!({ "get": {
            "summary": "The caller: whether the server checks tokens, the token's role and stream prefixes (open mode: admin, none).",
            "responses": { "200": ok("The caller.", json!({ "type": "object", "properties": {
                "auth": { "type": "boolean" },
                "role": { "type": "string", "enum": ["read", "write", "admin"] },
                "stream_prefixes": { "type": "array", "items": { "type": "string" } }
            } })), "401": error("No valid token.") }
        } }),
        ),
        (
            "/node",
            json!({ "get": {
            "summary": "The node: event and stream counts, segments (compressed or not), disk usage by kind (segments, indexes, other files) and space left, retention budget and holds, the last background error, why appends are refused if they are.",
            "responses": { "200": ok("The node.", obj.clone()) }
        } }),
        ),
        (
            "/admin/verify",
            json!({ "post": {
            "summary": "Read and check every segment and index now (admin); the answer lists the problems found.",
            "responses": { "200": ok("Verify report.", json!({ "type": "object", "properties": {
                "clean": { "type": "boolean" }, "segments": { "type": "integer" }, "indexes": { "type": "integer" },
                "events": { "type": "integer" }, "bytes": { "type": "integer" }, "problems": { "type": "array", "items": { "type": "string" } }
            } })) }
        } }),
        ),
    ]
}

/// The (path, method) pairs the document describes, sorted.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            if let Some(item) = item.as_object() {
                for method in item.keys() {
                    out.push((path.clone(), method.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_matches_the_route_table_exactly() {
        let mut routes: Vec<(String, String)> = crate::http::ROUTES
            .iter()
            .map(|r| (r.path.to_string(), r.verb.as_str().to_string()))
            .collect();
        routes.sort();
        assert_eq!(operations(&document()), routes);
    }
}
